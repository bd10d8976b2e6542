"""ADT^A08 (update patient information) and ADT^A31 (update person information): the PID,
including the death indicator (PID-30), which ends the patient's surveillance plans.
ADT^A40 (merge patient - patient identifier list, HL7 v2.5.1 ch. 3.3.40): the PID names the
surviving patient, MRG-1 the prior identifiers whose orders and plans become the survivor's."""

from __future__ import annotations

import datetime as dt

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from integrations.errors import InvalidInput
from integrations.hl7.orders import identifiers_of, patient_identifiers
from pathways.orders import PatientMerge, PatientUpdate

ADT_UPDATE_EVENTS = {"A08", "A31"}
ADT_MERGE_EVENTS = {"A40"}
ADT_EVENTS = ADT_UPDATE_EVENTS | ADT_MERGE_EVENTS


def _text(element) -> str:  # noqa: ANN001
    return element.to_er7().strip() if element is not None else ""


def parse_adt(raw: str) -> PatientUpdate | PatientMerge:
    """An ADT^A08/A31 (`PatientUpdate`) or ADT^A40 (`PatientMerge`); InvalidInput names the field."""
    try:
        message = parse_message(raw, validation_level=VALIDATION_LEVEL.QUIET, find_groups=False)
    except HL7apyException as exc:
        raise InvalidInput(f"MSH: message cannot be parsed ({exc.__class__.__name__})") from None
    update = _patient_update(message)
    trigger = (_text(message.msh.msh_9).split("^") + [""])[1]
    if trigger not in ADT_MERGE_EVENTS:
        return update
    mrg = next((s for s in message.children if s.name == "MRG"), None)
    if mrg is None or not mrg.mrg_1:
        raise InvalidInput("MRG-1: prior patient identifier list missing")
    nhs_number, local_id, authority = identifiers_of(mrg.mrg_1, "MRG-1")
    merge = PatientMerge(update, nhs_number, local_id, authority)
    if update.key_identifier in merge.prior_key_identifiers:
        raise InvalidInput("MRG-1: the prior identifier is the surviving patient's own")
    return merge


def _patient_update(message) -> PatientUpdate:  # noqa: ANN001
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
