"""ADT^A08 (update patient information) and ADT^A31 (update person information): the PID,
including the death indicator (PID-30), which ends the patient's surveillance plans."""

from __future__ import annotations

import datetime as dt

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from integrations.errors import InvalidInput
from integrations.hl7.orders import patient_identifiers
from pathways.orders import PatientUpdate

ADT_UPDATE_EVENTS = {"A08", "A31"}


def _text(element) -> str:  # noqa: ANN001
    return element.to_er7().strip() if element is not None else ""


def parse_patient_update(raw: str) -> PatientUpdate:
    """The demographics of an ADT^A08/A31; raise InvalidInput naming the field."""
    try:
        message = parse_message(raw, validation_level=VALIDATION_LEVEL.QUIET, find_groups=False)
    except HL7apyException as exc:
        raise InvalidInput(f"MSH: message cannot be parsed ({exc.__class__.__name__})") from None
    pid = next((s for s in message.children if s.name == "PID"), None)
    if pid is None:
        raise InvalidInput("PID: segment missing")
    nhs_number, local_id, local_authority = patient_identifiers(pid)
    birth = _text(pid.pid_7.ts_1) if pid.pid_7 else ""
    try:
        birth_date = dt.datetime.strptime(birth[:8], "%Y%m%d").date() if birth else None
    except ValueError:
        raise InvalidInput("PID-7: not a date (YYYYMMDD)") from None
    sex = _text(pid.pid_8)[:1].upper()
    return PatientUpdate(
        nhs_number=nhs_number,
        local_patient_id=local_id,
        family_name=_text(pid.pid_5.xpn_1).split("&")[0] if pid.pid_5 else "",
        given_name=_text(pid.pid_5.xpn_2) if pid.pid_5 else "",
        birth_date=birth_date,
        sex=sex if sex in ("F", "M") else "U",
        local_id_authority=local_authority,
        deceased=_text(pid.pid_30).upper() == "Y" if pid.pid_30 else False,
    )
