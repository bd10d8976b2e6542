"""FHIR R4 transaction Bundle of a result: Patient, Observations and a DiagnosticReport.

Every entry is a conditional create (`ifNoneExist` on a stable identifier), and every
fullUrl is a urn:uuid derived from the result id: posting the same Bundle twice creates
nothing new. Resources are checked against the `fhir.resources.R4B` models (the 8.x
default package is R5). The Patient carries the UK Core NHS number identifier.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from pathways import codes
from pathways.identifiers import NHS_NUMBER_SYSTEM
from pathways.report import Code, Finding, ReportContent, ResultContext

RESULT_SYSTEM = "urn:radpath:result"
OBSERVATION_SYSTEM = "urn:radpath:observation"
PLACER_ORDER_SYSTEM = "urn:radpath:placer-order-number"
LOCAL_PATIENT_SYSTEM = "urn:radpath:local-patient-id"
DICOM_UID_SYSTEM = "urn:dicom:uid"  # FHIR R4 ImagingStudy identifier convention
OBSERVATION_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier types (PLAC, MR)
_FULLURL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:radpath:fhir-fullurl")
_GENDER = {"F": "female", "M": "male", "U": "unknown"}


def _full_url(ctx: ResultContext, purpose: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_FULLURL_NAMESPACE, f'{ctx.result_id}/{purpose}')}"


def _coding(code: Code) -> dict[str, str]:
    return {"system": codes.as_fhir_system(code.system), "code": code.code, "display": code.display}


def _concept(code: Code) -> dict[str, Any]:
    return {"coding": [_coding(code)], "text": code.display}


def _instant(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.isoformat()


def _identifier(system: str, value: str) -> dict[str, str]:
    return {"system": system, "value": value}


def _if_none_exist(identifier: dict[str, str]) -> str:
    return "identifier=" + quote(f"{identifier['system']}|{identifier['value']}", safe=":/|")


def _entry(full_url: str, resource: dict[str, Any], identifier: dict[str, str], *, update: bool = False) -> dict[str, Any]:
    """Conditional create (first issue) or conditional update (corrections) on the identifier."""
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    if update:
        request = {"method": "PUT", "url": f"{resource['resourceType']}?{_if_none_exist(identifier)}"}
    else:
        request = {"method": "POST", "url": resource["resourceType"], "ifNoneExist": _if_none_exist(identifier)}
    return {"fullUrl": full_url, "resource": model, "request": request}


MODEL_SHA256_SYSTEM = "urn:radpath:model-sha256"  # the model file's sha256 (model card, spec)


def _device_entry(ctx: ResultContext) -> dict[str, Any]:
    """The algorithm as a FHIR Device (name, version, identifiers: the DICOM Device UID the SR
    and SEG carry, and the model file's sha256), created once per model version."""
    from integrations.uids import algorithm_device_uid

    uid = _identifier(DICOM_UID_SYSTEM, f"urn:oid:{algorithm_device_uid(ctx.model_name, ctx.model_version, ctx.model_sha256)}")
    identifiers = [uid] + ([_identifier(MODEL_SHA256_SYSTEM, ctx.model_sha256)] if ctx.model_sha256 else [])
    resource = {
        "resourceType": "Device",
        "identifier": identifiers,
        "manufacturer": "radpath",
        "deviceName": [{"name": ctx.model_name, "type": "model-name"}],
        "version": [{"value": ctx.model_version}],
        "type": _concept(codes.ARTIFICIAL_INTELLIGENCE),
    }
    return _entry(_full_url(ctx, "device"), resource, uid)


def _provenance_entry(ctx: ResultContext, targets: list[str], status: str, interpreter: dict[str, str] | None) -> dict[str, Any]:
    """Provenance of the report and its observations: the algorithm (Device) is the author;
    a reviewer, once one accepted, the verifier. One per result and status (PUT by a
    deterministic id: Provenance has no business identifier to create it conditionally on)."""
    participant = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
    agents = [{"type": {"coding": [{"system": participant, "code": "author"}]},
               "who": {"reference": _full_url(ctx, "device")}}]
    if interpreter:
        agents.append({"type": {"coding": [{"system": participant, "code": "verifier"}]}, "who": interpreter})
    resource_id = str(uuid.uuid5(_FULLURL_NAMESPACE, f"{ctx.result_id}/provenance/{status}"))
    resource = {"resourceType": "Provenance", "id": resource_id, "target": [{"reference": t} for t in targets],
                "recorded": _instant(ctx.observed_at), "agent": agents}
    model = get_fhir_model_class("Provenance").model_validate(resource)
    return {"fullUrl": _full_url(ctx, f"provenance/{status}"), "resource": model,
            "request": {"method": "PUT", "url": f"Provenance/{resource_id}"}}


def _patient_entry(ctx: ResultContext) -> tuple[dict[str, Any], str]:
    p = ctx.patient
    identifiers = []
    if p.nhs_number:
        identifiers.append(_identifier(NHS_NUMBER_SYSTEM, p.nhs_number))
    if p.local_id:
        local = _identifier(f"{LOCAL_PATIENT_SYSTEM}:{p.local_id_authority or 'default'}", p.local_id)
        local["type"] = {"coding": [{"system": V2_0203, "code": "MR"}]}
        identifiers.append(local)
    if not identifiers:
        raise ValueError("a patient needs an NHS number or a local identifier to be matched")
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
    if p.family_name or p.given_name:
        name: dict[str, Any] = {"use": "official"}
        if p.family_name:
            name["family"] = p.family_name
        if p.given_name:
            name["given"] = [p.given_name]
        resource["name"] = [name]
    resource["gender"] = _GENDER[p.sex]
    if p.birth_date:
        resource["birthDate"] = p.birth_date.isoformat()
    url = _full_url(ctx, "patient")
    match_on = {k: v for k, v in identifiers[0].items() if k in ("system", "value")}
    return _entry(url, resource, match_on), url


class _ObservationFactory:
    """Builds the Observations of one result, all sharing subject, time and device."""

    def __init__(self, ctx: ResultContext, subject: dict[str, str], status: str = "preliminary",
                 update: bool = False, interpreter: dict[str, str] | None = None):
        self.ctx = ctx
        self.subject = subject
        self.status = status
        self.update = update
        self.interpreter = interpreter
        self.device = _full_url(ctx, "device")
        self.entries: list[dict[str, Any]] = []

    def add(self, key: str, code: Code, value: dict[str, Any], *, site: Code | None = None,
            method: Code | None = None, members: tuple[str, ...] | list[str] = (),
            note: str = "") -> str:
        ctx = self.ctx
        identifier = _identifier(OBSERVATION_SYSTEM, f"{ctx.result_id}.{key}")
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": [identifier],
            "status": self.status,
            "category": [_concept(codes.IMAGING_CATEGORY)],
            "code": _concept(code),
            "subject": self.subject,
            "effectiveDateTime": _instant(ctx.observed_at),
            "issued": _instant(ctx.observed_at),
            "device": {"reference": self.device, "display": f"{ctx.model_name} {ctx.model_version} (radpath)"},
            "derivedFrom": [{
                "type": "ImagingStudy",
                "identifier": _identifier(DICOM_UID_SYSTEM, f"urn:oid:{ctx.study_uid}"),
            }],
            **value,
        }
        if site is not None:
            resource["bodySite"] = _concept(site)
        if method is not None:
            resource["method"] = _concept(method)
        if members:
            resource["hasMember"] = [{"reference": m} for m in members]
        if note:
            resource["note"] = [{"text": note}]
        if self.interpreter:
            resource["performer"] = [self.interpreter]
        url = _full_url(ctx, f"observation/{key}")
        self.entries.append(_entry(url, resource, identifier, update=self.update))
        return url

    def finding(self, f: Finding) -> str:
        members = [
            self.add(
                f"{f.key}.{m.concept.code}",
                m.concept,
                {"valueQuantity": {
                    "value": m.value,
                    "unit": m.unit.code,
                    "system": codes.UCUM,
                    "code": m.unit.code,
                }},
                site=f.site,
                method=m.method,
            )
            for m in f.measurements
        ]
        members += [
            self.add(f"{f.key}.{q.concept.code}", q.concept, {"valueCodeableConcept": _concept(q.value)},
                     site=f.site)
            for q in f.qualitative
        ]
        return self.add(f.key, f.finding_type, {"valueString": f.label}, site=f.site,
                        members=members, note=f.summary)


TASK_CODES = "http://hl7.org/fhir/CodeSystem/task-code"
TASK_PRIORITIES = ("urgent", "asap", "stat")  # FHIR R4 request-priority, above routine


def _priority_task_entry(ctx: ResultContext, subject: dict[str, str], report_url: str, basis: dict[str, Any],
                         priority: str) -> dict[str, Any]:
    """A FHIR R4 Task asking the EHR's reporting worklist to fulfil the order first: code
    `fulfill` (task-code: "fulfill the focal request"), `focus` the ServiceRequest by its placer
    identifier, `priority` urgent/asap/stat (request-priority), `reasonReference` the AI report
    that flagged it. Created once per result (conditional create on its identifier), so a
    retried delivery never queues the exam twice; the reviewer's later final carries no Task."""
    if priority not in TASK_PRIORITIES:
        raise ValueError(f"a priority Task raises the priority: one of {', '.join(TASK_PRIORITIES)}")
    identifier = _identifier(RESULT_SYSTEM, f"{ctx.result_id}/priority")
    resource = {
        "resourceType": "Task",
        "identifier": [identifier],
        "basedOn": [basis],
        "status": "requested",
        "intent": "order",
        "priority": priority,
        "code": {"coding": [{"system": TASK_CODES, "code": "fulfill", "display": "Fulfill the focal request"}]},
        "description": "An AI finding flagged this exam urgent (unreviewed AI output): report it first.",
        "focus": basis,
        "for": subject,
        "authoredOn": _instant(ctx.observed_at),
        "requester": {"reference": _full_url(ctx, "device")},
        "reasonReference": {"reference": report_url},
    }
    return _entry(_full_url(ctx, "priority-task"), resource, identifier)


REPORT_STATUSES = ("preliminary", "final", "amended", "corrected", "entered-in-error")  # R4 diagnostic-report-status


def build_report_bundle(
    content: ReportContent, ctx: ResultContext, *, patient_reference: str | None = None, status: str = "preliminary",
    interpreter: str | None = None, update: bool | None = None, priority_task: str | None = None,
) -> dict[str, Any]:
    """A JSON-ready FHIR R4 transaction Bundle for the EHR.

    With `patient_reference` (e.g. "Patient/123", already known to the EHR) no Patient entry
    is sent; otherwise the Patient is created conditionally on its NHS number.
    `status`: "preliminary" until a named reviewer accepts (`pathways.result_status`);
    "final" and "amended" name the reviewer (`interpreter`) as DiagnosticReport.resultsInterpreter
    and Observation.performer. `update` (default: any status but preliminary and final) re-sends
    the same resources, same identifiers, as conditional updates: the EHR's report changes in place.
    `priority_task` (urgent/asap/stat): with an urgent finding, also a Task raising the exam's
    priority on the EHR's worklist (the FHIR destination's `priority_update = "task"`).
    """
    if status not in REPORT_STATUSES:
        raise ValueError(f"report status must be one of {', '.join(REPORT_STATUSES)}")
    if status in ("final", "amended", "corrected") and not (interpreter and interpreter.strip()):
        raise ValueError(f"a {status} report needs the reviewer (resultsInterpreter)")
    if update is None:
        update = status not in ("preliminary", "final")
    named = {"display": interpreter.strip()} if interpreter and interpreter.strip() else None
    entries: list[dict[str, Any]] = []
    if patient_reference is None:
        patient_entry, subject_ref = _patient_entry(ctx)
        entries.append(patient_entry)
    else:
        subject_ref = patient_reference
    subject = {"reference": subject_ref}

    entries.append(_device_entry(ctx))
    observations = _ObservationFactory(ctx, subject, status, update, named)
    results = [observations.finding(f) for f in content.findings]
    # The urgent flag where an EHR acts on it: Observation.interpretation "AA" Critical abnormal
    # (HL7 v3 ObservationInterpretation, the R4 binding of Observation.interpretation).
    urgent_value: dict[str, Any] = {"valueBoolean": content.urgent}
    if content.urgent:
        urgent_value["interpretation"] = [{"coding": [{"system": OBSERVATION_INTERPRETATION, "code": "AA",
                                                       "display": "Critical abnormal"}]}]
    results.append(observations.add("urgent", codes.URGENT_REVIEW, urgent_value))
    entries += observations.entries

    identifier = _identifier(RESULT_SYSTEM, ctx.result_id)
    basis = {
        "type": "ServiceRequest",
        "identifier": {
            "type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
            "system": ctx.placer_system or PLACER_ORDER_SYSTEM,  # the EHR's own, where the order named it
            "value": ctx.placer_order_number,
        },
    }
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [identifier],
        "basedOn": [basis],
        "status": status,
        "category": [_concept(codes.RADIOLOGY_SECTION)],
        "code": _concept(codes.AI_IMAGING_RESULT),  # an algorithm's result, not the radiologist's report
        "subject": subject,
        "effectiveDateTime": _instant(ctx.observed_at),
        "issued": _instant(ctx.observed_at),
        "imagingStudy": [{
            "type": "ImagingStudy",
            "identifier": _identifier(DICOM_UID_SYSTEM, f"urn:oid:{ctx.study_uid}"),
        }],
        "result": [{"reference": url} for url in results],
        "conclusion": content.conclusion,
        "presentedForm": [{
            "contentType": "text/plain; charset=utf-8",
            "language": "en-GB",
            "title": content.title,
            "data": base64.b64encode(content.text.encode("utf-8")).decode("ascii"),
        }],
    }
    if content.conclusion_codes:
        report["conclusionCode"] = [_concept(c) for c in content.conclusion_codes]
    if named:
        report["resultsInterpreter"] = [named]
    report_url = _full_url(ctx, "diagnostic-report")
    entries.append(_entry(report_url, report, identifier, update=update))
    entries.append(_provenance_entry(ctx, [report_url] + [e["fullUrl"] for e in observations.entries], status, named))
    if priority_task:
        entries.append(_priority_task_entry(ctx, subject, report_url, basis, priority_task))

    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return bundle.model_dump(mode="json", exclude_none=True)


def validate_r4(bundle: dict[str, Any]) -> None:
    """Round-trip the Bundle and each resource through the R4B models; raise on any error."""
    if bundle.get("resourceType") != "Bundle":
        raise ValueError("not a FHIR Bundle")
    Bundle.model_validate(bundle)
    for index, entry in enumerate(bundle.get("entry", [])):
        resource = entry.get("resource") or {}
        kind = resource.get("resourceType")
        if not kind:
            raise ValueError(f"entry {index}: resource without resourceType")
        model = get_fhir_model_class(kind).model_validate(resource)
        again = model.model_dump(mode="json", exclude_none=True)
        if again != resource:
            raise ValueError(f"entry {index} ({kind}): does not round-trip through the R4B model")
