"""Parse the radiologist's signed report from the EHR or RIS as a FHIR R4 DiagnosticReport into
a `FinalReport` (issue 16: the evidence loop; the HL7 twin is integrations/hl7/reports.py).

Signed means `status` final, or amended/corrected/appended (a correction; FHIR R4 valueset
diagnostic-report-status); anything else is refused (422 naming DiagnosticReport.status). The exam
is named by an identifier typed ACSN (HL7 v2-0203 accession ID) on the report itself or on the
ServiceRequest it is `basedOn` (a logical reference by identifier). The narrative is the
`presentedForm` attachment of type text/plain, else `conclusion`. Errors never echo the report.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

from integrations.fhir.servicerequest import FhirInputError, typed_identifier
from pathways.final_reports import FinalReport

SIGNED = {"final": "final", "amended": "corrected", "corrected": "corrected", "appended": "corrected"}


def _accession(resource: dict[str, Any]) -> str:
    candidates = [resource.get("identifier") or []]
    candidates += [[(ref or {}).get("identifier") or {}] for ref in resource.get("basedOn") or [] if isinstance(ref, dict)]
    for identifiers in candidates:
        found = typed_identifier([i for i in identifiers if isinstance(i, dict)], "ACSN")
        if found:
            return str(found["value"])
    raise FhirInputError("no accession number: an identifier typed ACSN on the report or on its basedOn "
                         "ServiceRequest", expression="DiagnosticReport.identifier")


def _text(resource: dict[str, Any]) -> str:
    for form in resource.get("presentedForm") or []:
        if isinstance(form, dict) and str(form.get("contentType", "")).startswith("text/plain") and form.get("data"):
            try:
                return base64.b64decode(form["data"], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise FhirInputError("presentedForm.data is not base64 UTF-8 text", status=400,
                                     expression="DiagnosticReport.presentedForm") from None
    if isinstance(resource.get("conclusion"), str) and resource["conclusion"].strip():
        return resource["conclusion"]
    raise FhirInputError("the report has no text (presentedForm text/plain, or conclusion)",
                         expression="DiagnosticReport.presentedForm")


def _issued(value: Any) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    return when.astimezone(dt.UTC) if when and when.tzinfo else when


def parse_diagnostic_report(resource: Any, *, client: str) -> FinalReport:
    """One DiagnosticReport from `client` (its authenticated name) as a FinalReport. Its content
    hash is the message identity: the same resource sent twice is one report."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "DiagnosticReport":
        raise FhirInputError("expected a DiagnosticReport", status=400, code="structure")
    status = resource.get("status")
    if status not in SIGNED:
        raise FhirInputError("only a signed report is taken: status final, amended, corrected or appended",
                             code="business-rule", expression="DiagnosticReport.status")
    digest = hashlib.sha256(json.dumps(resource, sort_keys=True).encode()).hexdigest()[:32]
    return FinalReport(sending_application=f"fhir:{client}", sending_facility="", control_id=f"DiagnosticReport/{digest}",
                       message_type="DiagnosticReport", accession_number=_accession(resource), placer_order_number="",
                       result_status=SIGNED[status], text=_text(resource), reported_at=_issued(resource.get("issued")))
