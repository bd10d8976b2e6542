"""ADT^A08 (update patient information) and ADT^A31 (update person information): the PID."""

from __future__ import annotations

import datetime as dt

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from integrations.db.hl7_intake import PatientUpdate
from integrations.errors import InvalidInput
from pathways.identifiers import is_valid_nhs_number, normalise_nhs_number

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
    nhs_number = local_id = None
    for rep in pid.pid_3:
        ident, authority, id_type = _text(rep.cx_1), _text(rep.cx_4), _text(rep.cx_5)
        if id_type == "NH" or authority.upper().startswith("NHS"):
            nhs_number = normalise_nhs_number(ident)
            if not is_valid_nhs_number(nhs_number):
                raise InvalidInput("PID-3: NHS number fails its modulus-11 check")
        elif ident and local_id is None:
            local_id = ident
    if nhs_number is None and local_id is None:
        raise InvalidInput("PID-3: no patient identifier")
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
    )
