"""Parse HL7 v2 radiology orders (ORM^O01, OMI^O23) into an `OrderRequest`.

hl7apy parses; radpath reads the fields a pathway needs. Errors name the HL7 field
(e.g. "PID-3") and never echo patient identifiers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message, Segment
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from integrations.errors import InvalidInput
from pathways.identifiers import is_valid_nhs_number, normalise_nhs_number
from pathways.orders import OrderRequest

ORDER_MESSAGE_TYPES = {("ORM", "O01"), ("OMI", "O23")}
# HL7 v2 priority (TQ-6 / ORC-7.6; table 0027) → FHIR request-priority words
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "routine", "T": "urgent", "C": "urgent"}
# Brock risk-factor answers carried as OBX in the order (codes agreed with the RIS; local "L")
RISK_FACTOR_OBX = {"FHLC": "family_history_lung_cancer", "EMPH": "emphysema"}


def _first(message: Message, name: str) -> Segment | None:
    return next((s for s in message.children if s.name == name), None)


def _text(element: Any) -> str:
    return element.to_er7().strip() if element is not None else ""


def _date(value: str, field_name: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        raise InvalidInput(f"{field_name}: not a date (YYYYMMDD)") from None


def patient_identifiers(pid: Segment) -> tuple[str | None, str | None, str | None]:
    """(NHS number, local hospital number, its assigning authority) from repeated PID-3.

    The NHS number is the repetition typed "NH" (or assigned by "NHS"); its modulus-11 check
    digit must hold. Raises InvalidInput naming PID-3 when no identifier is usable.
    """
    return identifiers_of(pid.pid_3, "PID-3")


def identifiers_of(repetitions, field_name: str) -> tuple[str | None, str | None, str | None]:  # noqa: ANN001
    """(NHS number, local id, its authority) from a repeated CX field (PID-3, MRG-1)."""
    nhs_number = local_id = local_authority = None
    for rep in repetitions:
        ident, authority, id_type = _text(rep.cx_1), _text(rep.cx_4), _text(rep.cx_5)
        if id_type == "NH" or authority.upper().startswith("NHS"):
            nhs_number = normalise_nhs_number(ident)
            if not is_valid_nhs_number(nhs_number):
                raise InvalidInput(f"{field_name}: NHS number fails its modulus-11 check")
        elif ident and local_id is None:
            local_id, local_authority = ident, authority or None
    if nhs_number is None and local_id is None:
        raise InvalidInput(f"{field_name}: no patient identifier")
    return nhs_number, local_id, local_authority


def identifier_system(ei) -> str:  # noqa: ANN001 - an hl7apy EI field
    """The FHIR identifier system an HL7 v2 EI names by its universal id (EI-3) and type (EI-4):
    ISO → urn:oid:, UUID → urn:uuid:, URI as is (HL7 v2-to-FHIR IG, EI data type map). A bare
    namespace (EI-2) names no system: ''."""
    universal, kind = _text(ei.ei_3), _text(ei.ei_4).upper()
    if not universal:
        return ""
    return {"ISO": f"urn:oid:{universal}", "UUID": f"urn:uuid:{universal}", "URI": universal}.get(kind, "")


def parse_order(raw: str) -> OrderRequest:
    """Parse an order message; raise InvalidInput naming the offending field."""
    try:
        message = parse_message(raw.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.QUIET, find_groups=False)
    except HL7apyException as exc:
        raise InvalidInput(f"MSH: message cannot be parsed ({exc.__class__.__name__})") from None
    msh = message.msh
    type_parts = (_text(msh.msh_9).split("^") + ["", ""])[:2]  # MSH-9 is CM in v2.3, MSG later
    msg_type = (type_parts[0], type_parts[1])
    if msg_type not in ORDER_MESSAGE_TYPES:
        raise InvalidInput(f"MSH-9: {'^'.join(msg_type)} is not an imaging order (ORM^O01 or OMI^O23)")
    control_id = _text(msh.msh_10)
    if not control_id:
        raise InvalidInput("MSH-10: message control id missing")
    pid, orc, obr = (_first(message, n) for n in ("PID", "ORC", "OBR"))
    for name, seg in (("PID", pid), ("ORC", orc), ("OBR", obr)):
        if seg is None:
            raise InvalidInput(f"{name}: segment missing")

    nhs_number, local_id, local_authority = patient_identifiers(pid)

    placer_ei = orc.orc_2 if _text(orc.orc_2.ei_1) else obr.obr_2
    placer = _text(placer_ei.ei_1)
    if not placer:
        raise InvalidInput("ORC-2: placer order number missing")
    filler = _text(orc.orc_3.ei_1) or _text(obr.obr_3.ei_1) or None
    accession = _text(obr.obr_18) or (filler or "")
    if not accession:
        raise InvalidInput("OBR-18: accession number missing")
    procedure = obr.obr_4
    code = _text(procedure.ce_1)
    if not code:
        raise InvalidInput("OBR-4: procedure code missing")
    priority_code = _text(orc.orc_7.tq_6) or _text(obr.obr_27.tq_6) or "R"

    context: dict[str, Any] = {}
    for obx in (s for s in message.children if s.name == "OBX"):
        key = RISK_FACTOR_OBX.get(_text(obx.obx_3.ce_1))
        if key:
            context[key] = _text(obx.obx_5).split("^")[0].upper() in {"Y", "YES", "TRUE"}

    return OrderRequest(
        sending_application=_text(msh.msh_3.hd_1),
        sending_facility=_text(msh.msh_4.hd_1),
        control_id=control_id,
        message_type="^".join(msg_type),
        order_control=_text(orc.orc_1) or "NW",
        order_status=_text(orc.orc_5).upper(),
        placer_order_number=placer,
        placer_system=identifier_system(placer_ei),
        placer_namespace=_text(placer_ei.ei_2),
        filler_order_number=filler,
        accession_number=accession,
        nhs_number=nhs_number,
        local_patient_id=local_id,
        local_id_authority=local_authority,
        family_name=_text(pid.pid_5.xpn_1).split("&")[0],  # XPN-1 is FN from v2.3.1, ST in v2.3
        given_name=_text(pid.pid_5.xpn_2),
        birth_date=_date(_text(pid.pid_7.ts_1), "PID-7"),
        sex=(_text(pid.pid_8) or "U")[:1].upper() if _text(pid.pid_8)[:1].upper() in {"F", "M"} else "U",
        procedure_code=code,
        procedure_system=_text(procedure.ce_3),
        procedure_text=_text(procedure.ce_2),
        modality=_text(obr.obr_24),
        priority=PRIORITY.get(priority_code[:1].upper(), "routine"),
        clinical_indication=_text(obr.obr_31.ce_2) or _text(obr.obr_31) or _text(obr.obr_13),
        clinical_context=context,
    )
