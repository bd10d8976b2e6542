"""radpath's audit events as FHIR R4 AuditEvent resources (IHE ATNA / BALP shape), for a trust's SIEM.

Pure: no I/O. The event type is the DICOM audit message code (PS3.15 Annex A.5, DCM 1101xx) of
what happened; `action` is the FHIR AuditEvent action code (C R U D E); `outcome` 0 success,
4 minor failure (refused, rejected, a conflict), 8 serious failure (a dead letter, a failed run).
radpath's own action name, its chain sequence number and chain value travel as entity details,
so a SIEM holding the export can check the chain's head against `radpath audit verify`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from fhir.resources.R4B.auditevent import AuditEvent

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"

APPLICATION_ACTIVITY = ("110100", "Application Activity")
EXPORT = ("110106", "Export")
IMPORT = ("110107", "Import")
PATIENT_RECORD = ("110110", "Patient Record")
SECURITY_ALERT = ("110113", "Security Alert")

_SECURITY = ("association.rejected", "connection.refused", "auth.refused")
_MINOR_FAILURE = ("refused", "rejected", "conflict", "mismatch", "quarantined", "orphaned", "expired")
_SERIOUS_FAILURE = ("dead_lettered", "failed")  # audit verbs: delivery.dead_lettered, run.dead_lettered
# radpath's own components as actors; any other actor is a person (a reviewer, an operator).
COMPONENTS = {"hl7", "fhir", "dicom", "stow-rs", "readiness", "pathway", "delivery", "reconciler", "store-sweep", "radpath",
              "test"}


class AuditRow(Protocol):
    seq: int | None
    chain: str | None
    at: Any
    actor: str
    action: str
    entity_type: str
    entity_id: str
    detail: dict[str, Any]


def event_type(action: str) -> tuple[str, str]:
    """The DICOM audit message a radpath action is an instance of."""
    if action in _SECURITY or action.endswith(".unauthorized"):
        return SECURITY_ALERT
    if action.startswith("delivery."):
        return EXPORT  # results disclosed to the RIS, EHR or PACS
    if action.startswith(("order.", "study.", "instance.", "message.", "patient.")):
        return IMPORT
    if action.startswith(("run.", "result.", "review.")):
        return PATIENT_RECORD
    return APPLICATION_ACTIVITY  # mode changes, pauses, store sweeps, reconciler passes


def action_code(action: str) -> str:
    verb = action.rsplit(".", 1)[-1]
    if verb in ("received", "recorded", "created", "stored"):
        return "C"
    if verb in ("discarded", "deleted"):
        return "D"
    if action.startswith("delivery.") and verb == "delivered":
        return "R"  # an export reads the record out (DICOM Export: EventActionCode R)
    if action.startswith(("order.", "patient.", "result.", "review.", "study.")):
        return "U"
    return "E"


def is_person(actor: str) -> bool:
    return actor not in COMPONENTS and not actor.startswith(("reconciler:", "flow-run:"))


def outcome_code(action: str) -> str:
    if any(word in action for word in _SERIOUS_FAILURE):
        return "8"
    if action in _SECURITY or any(word in action for word in _MINOR_FAILURE):
        return "4"
    return "0"


def audit_event_resource(row: AuditRow, *, site: str) -> dict[str, Any]:
    """One ledger audit event as a FHIR R4 AuditEvent (checked by the fhir.resources model).
    `detail` carries ledger ids and counts only, never patient identifiers."""
    code, display = event_type(row.action)
    details = [{"type": "radpath-action", "valueString": row.action},
               {"type": "radpath-detail", "valueString": json.dumps(row.detail, sort_keys=True, default=str)}]
    if row.seq is not None:
        details += [{"type": "radpath-chain-seq", "valueString": str(row.seq)},
                    {"type": "radpath-chain", "valueString": row.chain or ""}]
    resource = {
        "resourceType": "AuditEvent",
        "id": f"radpath-audit-{row.seq}" if row.seq is not None else None,
        "type": {"system": DCM, "code": code, "display": display},
        "action": action_code(row.action),
        "recorded": row.at.isoformat(),
        "outcome": outcome_code(row.action),
        "agent": [{"who": {"display": row.actor}, "requestor": is_person(row.actor)}],
        "source": {"site": site, "observer": {"display": "radpath"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": [{"what": {"identifier": {"system": f"urn:radpath:{row.entity_type}", "value": row.entity_id}},
                    "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                    "detail": details}],
    }
    resource = {k: v for k, v in resource.items() if v is not None}
    AuditEvent.model_validate(resource)  # raises on a shape FHIR R4 does not allow
    return resource
