"""Parse the radiologist's signed report from the RIS (HL7 v2 ORU^R01) into a `FinalReport`.

HL7 v2.5.1 ch. 7.3.1: OBR-25 (result status, table 0123) F (final) or C (correction of a final
result) is a signed report; anything else (P, I, R, ...) is not yet the radiologist's word and is
refused. The exam is named by OBR-18 (accession number, radpath's orders use the same field) or
OBR-3 (filler order number); the narrative is every OBX whose value type is TX, FT or ST, in
order. Errors name the field and never echo the report or the patient.
"""

from __future__ import annotations

import datetime as dt
import re

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from integrations.errors import InvalidInput
from integrations.hl7.er7 import field_value, split_segments
from pathways.final_reports import FinalReport

REPORT_MESSAGE_TYPES = {("ORU", "R01")}
SIGNED_STATUSES = {"F": "final", "C": "corrected"}
TEXT_VALUE_TYPES = {"TX", "FT", "ST"}


def _unescape(value: str, encoding: str) -> str:
    """HL7 v2 escape sequences (ch. 2.7) in a text value, and FT's line break (\\.br\\)."""
    escape = encoding[2] if len(encoding) > 2 else "\\"
    comp, rep, sub = encoding[0], encoding[1], encoding[3] if len(encoding) > 3 else "&"
    table = {"F": "|", "S": comp, "R": rep, "T": sub, "E": escape, ".br": "\n"}
    pattern = re.compile(re.escape(escape) + r"(F|S|R|T|E|\.br)" + re.escape(escape))
    return pattern.sub(lambda m: table[m.group(1)], value)


def _timestamp(value: str) -> dt.datetime | None:
    digits = value[:14]
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d"):
        try:
            return dt.datetime.strptime(digits, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    return None


def parse_final_report(raw: str) -> FinalReport:
    """One ORU^R01 carrying one signed report; InvalidInput names the field at fault."""
    try:
        parse_message(raw, validation_level=VALIDATION_LEVEL.QUIET, find_groups=False)
    except HL7apyException as exc:
        raise InvalidInput(f"MSH: message cannot be parsed ({exc.__class__.__name__})") from None
    segments = split_segments(raw)
    msh = segments[0]
    sep, encoding = msh[3], msh.split(msh[3])[1]
    kind = tuple((field_value(segments, "MSH", 9).split(encoding[0]) + ["", ""])[:2])
    if kind not in REPORT_MESSAGE_TYPES:
        raise InvalidInput("MSH-9: not a result message (ORU^R01)")
    if not any(s.startswith("OBR") for s in segments):
        raise InvalidInput("OBR: segment missing")
    status = field_value(segments, "OBR", 25)[:1].upper()
    if status not in SIGNED_STATUSES:
        raise InvalidInput("OBR-25: only a signed report is accepted, F (final) or C (corrected) (HL7 table 0123)")
    accession = field_value(segments, "OBR", 18, components=1) or field_value(segments, "OBR", 3, components=1)
    if not accession:
        raise InvalidInput("OBR-18: accession number missing (nor OBR-3 filler order number)")
    lines = []
    for segment in segments:
        fields = segment.split(sep)
        if fields[0] == "OBX" and len(fields) > 5 and fields[2].upper() in TEXT_VALUE_TYPES:
            lines += [_unescape(part, encoding) for part in fields[5].split(encoding[1])]
    text = "\n".join(line for line in lines if line.strip())
    if not text:
        raise InvalidInput("OBX-5: the report has no text (OBX value type TX, FT or ST)")
    return FinalReport(
        sending_application=field_value(segments, "MSH", 3, components=1),
        sending_facility=field_value(segments, "MSH", 4, components=1),
        control_id=field_value(segments, "MSH", 10),
        message_type="ORU^R01",
        accession_number=accession,
        placer_order_number=field_value(segments, "ORC", 2, components=1) or field_value(segments, "OBR", 2, components=1),
        result_status=SIGNED_STATUSES[status],  # type: ignore[arg-type]
        text=text,
        reported_at=_timestamp(field_value(segments, "OBR", 22)),
    )
