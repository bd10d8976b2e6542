"""FHIR R4 ServiceRequest (UK Core) → `OrderRequest`, and OperationOutcome answers.

Pure: no I/O. The ServiceRequest is checked against the `fhir.resources.R4B` model, then
read the way an HL7 ORM is read: the same `OrderRequest`, so both front doors share the
ledger path. Problems raise `FhirInputError` naming the element (FHIRPath-like
expression), never echoing a patient identifier.

Identifier conventions (HL7 v2 table 0203 identifier types, as UK Core uses them):
placer order number = identifier typed PLAC, else the ServiceRequest's own business identifier
(one not typed ACSN or FILL), else its resource id; accession = identifier typed ACSN, else one
typed FILL (filler order number). Never the `requisition`: that is a group identifier several
ServiceRequests share by design (FHIR R4 ServiceRequest.requisition, "composite request id"),
so it can never be one order's identity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import ValidationError

from fhir.resources.R4B.servicerequest import ServiceRequest

from integrations.errors import InvalidInput
from pathways.identifiers import NHS_NUMBER_SYSTEM, is_valid_nhs_number, normalise_nhs_number
from pathways.orders import OrderRequest

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
# DICOM PS3.3 C.7.3.1.1.1 Modality defined terms that radiology pathways order
DICOM_MODALITIES = {"CT", "MR", "CR", "DX", "MG", "US", "PT", "NM", "XA", "RF", "OT"}
ACTIONABLE_INTENTS = {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
CANCEL_STATUSES = {"revoked", "entered-in-error"}
PRIORITIES = {"routine", "urgent", "asap", "stat"}  # FHIR request-priority = radpath's words
_SEX = {"female": "F", "male": "M"}

Resolver = Callable[[str], dict[str, Any] | None]


class FhirInputError(InvalidInput):
    """Inbound FHIR that radpath cannot take; carries what the OperationOutcome says."""

    def __init__(self, message: str, *, status: int = 422, code: str = "invalid", expression: str | None = None):
        super().__init__(message)
        self.status, self.code, self.expression = status, code, expression


def operation_outcome(diagnostics: str, *, code: str = "invalid", severity: str = "error",
                      expression: str | None = None) -> dict[str, Any]:
    """A one-issue OperationOutcome (issue-type codes: http://hl7.org/fhir/R4/valueset-issue-type.html)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_for(error: FhirInputError) -> dict[str, Any]:
    return operation_outcome(str(error), code=error.code, expression=error.expression)


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def check_model(resource: dict[str, Any], model: type = ServiceRequest) -> None:
    """Validate against the R4B model; the first error becomes a 400 naming the element."""
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = _expression(resource.get("resourceType", "Resource"), tuple(first["loc"]))
        raise FhirInputError(f"{where}: {first['msg']}", status=400, code="structure", expression=where) from None


# Required bindings the R4B models do not enforce (FHIR R4 ServiceRequest: request-status,
# request-intent, request-priority value sets)
REQUIRED_CODES = {
    "status": {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    "intent": {"proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order",
               "instance-order", "option"},
    "priority": PRIORITIES,
}


def check_codes(resource: dict[str, Any]) -> None:
    for element, allowed in REQUIRED_CODES.items():
        value = resource.get(element)
        if (value is not None or element != "priority") and value not in allowed:
            where = f"ServiceRequest.{element}"
            raise FhirInputError(f"{where}: not a code of its required value set", status=400,
                                 code="code-invalid", expression=where)


def _typed(identifiers: list[dict[str, Any]], type_code: str) -> str | None:
    ident = typed_identifier(identifiers, type_code)
    return ident["value"] if ident else None


def typed_identifier(identifiers: list[dict[str, Any]], type_code: str) -> dict[str, Any] | None:
    for ident in identifiers:
        codings = (ident.get("type") or {}).get("coding") or []
        if any(c.get("system") == V2_0203 and c.get("code") == type_code for c in codings) and ident.get("value"):
            return ident
    return None


def _placer_identifier(resource: dict[str, Any]) -> dict[str, Any]:
    """The identifier this ServiceRequest is known by to its placer (see the module docstring)."""
    identifiers = resource.get("identifier") or []
    typed = typed_identifier(identifiers, "PLAC")
    if typed:
        return typed
    for ident in identifiers:
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or [] if c.get("system") == V2_0203}
        if ident.get("value") and not codes & {"ACSN", "FILL"}:
            return ident
    return {"value": resource["id"]} if resource.get("id") else {}


def control_id(resource: dict[str, Any]) -> str:
    """A stable id for one version of a resource: a resend of identical content is a duplicate."""
    canonical = json.dumps({k: v for k, v in resource.items() if k != "meta"}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class _Patient:
    nhs_number: str | None
    local_id: str | None
    local_authority: str | None
    family: str
    given: str
    birth_date: dt.date | None
    sex: str


def _patient(subject: dict[str, Any], resolve: Resolver) -> _Patient:
    ref = subject.get("reference")
    patient = resolve(ref) if ref else None
    if ref and patient is None and not subject.get("identifier"):
        raise FhirInputError(
            "ServiceRequest.subject: the Patient is not in the request; contain it, put it in the Bundle, "
            "or give subject.identifier with the NHS number",
            code="not-found", expression="ServiceRequest.subject",
        )
    if patient is not None and patient.get("resourceType") != "Patient":
        raise FhirInputError("ServiceRequest.subject: must be a Patient", expression="ServiceRequest.subject")
    identifiers = list((patient or {}).get("identifier") or [])
    if subject.get("identifier"):
        identifiers.append(subject["identifier"])
    nhs = local = authority = None
    for ident in identifiers:
        if ident.get("system") == NHS_NUMBER_SYSTEM and ident.get("value"):
            nhs = normalise_nhs_number(ident["value"])
            if not is_valid_nhs_number(nhs):
                raise FhirInputError("Patient.identifier: NHS number fails its modulus-11 check",
                                     code="value", expression="Patient.identifier")
        elif ident.get("value") and local is None:
            local, authority = ident["value"], ident.get("system")
    if nhs is None and local is None:
        raise FhirInputError("ServiceRequest.subject: no patient identifier", code="required",
                             expression="ServiceRequest.subject")
    name = next((n for n in (patient or {}).get("name") or [] if n.get("use") in (None, "official", "usual")), {})
    birth = (patient or {}).get("birthDate")
    try:
        birth_date = dt.date.fromisoformat(birth) if birth and len(birth) == 10 else None
    except ValueError:
        raise FhirInputError("Patient.birthDate: not a date", expression="Patient.birthDate") from None
    return _Patient(nhs, local, authority, name.get("family", ""), " ".join(name.get("given") or []),
                    birth_date, _SEX.get((patient or {}).get("gender", ""), "U"))


def _procedure(resource: dict[str, Any]) -> tuple[str, str, str]:
    code = resource.get("code") or {}
    codings = [c for c in code.get("coding") or [] if c.get("code")]
    if not codings:
        raise FhirInputError("ServiceRequest.code: a coded procedure is required", code="required",
                             expression="ServiceRequest.code")
    rank = {SNOMED: 0, LOINC: 1}
    best = min(codings, key=lambda c: rank.get(c.get("system", ""), 2))
    return best["code"], best.get("system", ""), best.get("display") or code.get("text", "")


def _modality(resource: dict[str, Any]) -> str:
    concepts = [resource.get("code") or {}, *(resource.get("category") or [])]
    for concept in concepts:
        for c in concept.get("coding") or []:
            if c.get("system") == DCM and c.get("code") in DICOM_MODALITIES:
                return c["code"]
    return ""


def _reason(resource: dict[str, Any]) -> str:
    for concept in resource.get("reasonCode") or []:
        text = concept.get("text") or next((c.get("display") for c in concept.get("coding") or [] if c.get("display")), "")
        if text:
            return text
    return ""


def contained_resolver(resource: dict[str, Any], bundle_resources: dict[str, dict[str, Any]] | None = None) -> Resolver:
    """Resolve '#id' to contained resources and full URLs / 'Type/id' to Bundle entries."""
    listed = resource.get("contained")
    # Only well-formed entries resolve; check_model then refuses a malformed `contained` with a 400.
    contained = {f"#{r['id']}": r for r in listed if isinstance(r, dict) and r.get("id")} if isinstance(listed, list) else {}
    others = bundle_resources or {}

    def resolve(reference: str) -> dict[str, Any] | None:
        return contained.get(reference) or others.get(reference)

    return resolve


def parse_service_request(
    resource: dict[str, Any], *, client: str, resolve: Resolver | None = None
) -> OrderRequest:
    """Read a ServiceRequest into an order; `client` names the authenticated sender."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
        raise FhirInputError("expected a ServiceRequest resource", status=400, code="structure",
                             expression="ServiceRequest")
    check_model(resource)
    check_codes(resource)
    status = resource.get("status")
    if resource.get("intent") not in ACTIONABLE_INTENTS:
        raise FhirInputError(f"ServiceRequest.intent: '{resource.get('intent')}' is not an order",
                             code="business-rule", expression="ServiceRequest.intent")
    identifiers = resource.get("identifier") or []
    placer_identifier = _placer_identifier(resource)
    placer = placer_identifier.get("value")
    if not placer:
        raise FhirInputError("ServiceRequest.identifier: placer order number (type PLAC), another identifier of "
                             "this ServiceRequest, or its id required", code="required",
                             expression="ServiceRequest.identifier")
    filler = _typed(identifiers, "FILL")
    accession = _typed(identifiers, "ACSN") or filler
    if not accession:
        raise FhirInputError("ServiceRequest.identifier: accession number (type ACSN) required",
                             code="required", expression="ServiceRequest.identifier")
    cancelling = status in CANCEL_STATUSES
    completed = status == "completed"  # the exam is done: readiness needs a shorter silence
    if status != "active" and not cancelling and not completed:
        raise FhirInputError(f"ServiceRequest.status: '{status}' is not an order radpath acts on",
                             code="business-rule", expression="ServiceRequest.status")
    patient = _patient(resource.get("subject") or {}, resolve or contained_resolver(resource))
    code, system, text = _procedure(resource)
    priority = resource.get("priority", "routine")
    return OrderRequest(
        sending_application=client,
        sending_facility="FHIR",
        control_id=control_id(resource),
        message_type="ServiceRequest",
        order_control="CA" if cancelling else "SC" if completed else "NW",
        order_status="CM" if completed else "",
        placer_order_number=placer,
        placer_system=placer_identifier.get("system", ""),
        filler_order_number=filler,
        accession_number=accession,
        nhs_number=patient.nhs_number,
        local_patient_id=patient.local_id,
        local_id_authority=patient.local_authority,
        family_name=patient.family,
        given_name=patient.given,
        birth_date=patient.birth_date,
        sex=patient.sex,
        procedure_code=code,
        procedure_system=system,
        procedure_text=text,
        modality=_modality(resource),
        priority=priority,
        clinical_indication=_reason(resource),
        protocol="fhir",
    )
