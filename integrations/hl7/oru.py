"""HL7 v2 ORU^R01 result message (v2.4 or v2.5.1) of any `ReportContent`, built with hl7apy.

Layout: MSH, PID, ORC (RE), OBR, then OBX per finding (finding type and site as CE,
measurements as NM with UCUM units, qualitative items as CE; OBX-4 groups one finding's
OBXs), the conclusion (CE), the urgent flag (CE, HL7 table 0136) and the narrative report
as one TX OBX per line. OBR-25 and every OBX-11 carry the result's life-cycle status
(`pathways.result_status`: P until a named reviewer accepts, then F, or C where it replaces a
final result; X withdraws it); the reviewer is OBR-32 (principal result interpreter). MSH-10 is derived from the result and the destination, so a
retry carries the same control id and the receiver can drop the duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import textwrap
from decimal import Decimal

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message

from pathways import codes
from pathways.report import Code, ReportContent, ResultContext
from pathways.result_status import ResultStatus

SUPPORTED_VERSIONS = ("2.4", "2.5.1")
NHS_AUTHORITY = "NHS"  # PID-3.4 assigning authority for the NHS number; PID-3.5 type "NH"
_YES_NO = {True: "Y^Yes^HL70136", False: "N^No^HL70136"}  # HL7 table 0136
URGENT_ABNORMAL_FLAG = "AA"  # HL7 table 0078 Abnormal Flags: very abnormal (panic)

# hl7apy types OBX-5 and CE text as ST (199 characters); TX lines are wrapped to this width
_ST_MAX = 199
TX_WIDTH = 80
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str) -> str:
    """Escape HL7 delimiters in free text (HL7 v2 section 2.7.1); drop line breaks."""
    for raw, escaped in _ESCAPES:
        text = text.replace(raw, escaped)
    return text.replace("\r", " ").replace("\n", " ")


def escape_within(text: str, limit: int = _ST_MAX) -> str:
    """Escaped text, shortened (before escaping, so no escape sequence is split) to `limit`."""
    if len(escape(text)) <= limit:
        return escape(text)
    while text and len(escape(text)) > limit - 3:
        text = text[:-1]
    return escape(text.rstrip()) + "..."


PRIORITIES = {"S": "Stat", "A": "ASAP", "R": "Routine"}  # HL7 table 0027 Priority (TQ component 6)


def quantity_timing(priority: str) -> str:
    """A TQ value (ORC-7, OBR-27) carrying only its 6th component, Priority."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not in HL7 table 0027 ({', '.join(PRIORITIES)})")
    return "^^^^^" + priority


def default_control_id(result_id: str, destination: str, status: str = "") -> str:
    """MSH-10 for a result sent to one destination with one status: 20 characters (the v2.4
    ST limit). The preliminary and the final of a result are two messages, two control ids."""
    key = f"{result_id}|{destination}" + (f"|{status}" if status and status != ResultStatus.PRELIMINARY else "")
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"RP{digest[:18].upper()}"


def hl7_timestamp(when: dt.datetime) -> str:
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
        return when.strftime("%Y%m%d%H%M%S+0000")
    return when.strftime("%Y%m%d%H%M%S")


def coded(code: Code) -> str:
    return "^".join(
        (escape(code.code), escape_within(code.display),
         escape(codes.as_hl7v2_coding_system(code.system)))
    )


class _ObxWriter:
    def __init__(self, order_observation: Group, observed_at: str, status: str, equipment: str = ""):
        self.group = order_observation
        self.observed_at = observed_at
        self.status = status
        self.equipment = equipment
        self.set_id = 0

    def add(self, value_type: str, concept: Code, value: str, *, sub_id: str = "",
            units: Code | None = None, method: Code | None = None, abnormal: str = "") -> None:
        self.set_id += 1
        observation = self.group.add_group("ORU_R01_OBSERVATION")
        obx = observation.add_segment("OBX")
        obx.obx_1 = str(self.set_id)
        obx.obx_2 = value_type
        obx.obx_3 = coded(concept)
        if sub_id:
            obx.obx_4 = sub_id
        if value:
            obx.obx_5 = value
        if units is not None:
            obx.obx_6 = coded(units)
        if abnormal:
            obx.obx_8 = abnormal
        obx.obx_11 = self.status
        obx.obx_14 = self.observed_at
        if method is not None:
            obx.obx_17 = coded(method)
        if self.equipment:
            obx.obx_18 = self.equipment


def equipment_identifier(ctx: ResultContext) -> str:
    """OBX-18 Equipment Instance Identifier (EI) of the algorithm that produced the
    observation: "<model> <version>" and, as the universal id (ISO: an OID), the Device UID
    the SR and SEG carry as Contributing Equipment (name + version + sha256)."""
    from integrations.uids import algorithm_device_uid

    uid = algorithm_device_uid(ctx.model_name, ctx.model_version, ctx.model_sha256)
    return f"{escape_within(f'{ctx.model_name} {ctx.model_version}', 100)}^RADPATH^{uid}^ISO"


def placer_entity_identifier(ctx: ResultContext) -> str:
    """ORC-2/OBR-2 as the placer sent it (EI: number^namespace^universal id^type), so the RIS
    finds its order under its own namespace; the bare number where the order named none."""
    parts = [escape(ctx.placer_order_number), escape(ctx.placer_namespace)]
    if ctx.placer_system.startswith("urn:oid:"):
        parts += [escape(ctx.placer_system[len("urn:oid:"):]), "ISO"]
    elif ctx.placer_system.startswith("urn:uuid:"):
        parts += [escape(ctx.placer_system[len("urn:uuid:"):]), "UUID"]
    elif ctx.placer_system:  # HL7 table 0301
        parts += [escape(ctx.placer_system), "URI"]
    return "^".join(parts).rstrip("^")


def _number(value: float) -> str:
    """NM text: plain decimal, never exponent notation (HL7 v2 NM)."""
    return format(Decimal(repr(float(value))), "f")


def build_oru_r01(
    content: ReportContent,
    ctx: ResultContext,
    *,
    version: str = "2.4",
    receiving_application: str = "RIS",
    receiving_facility: str = "",
    control_id: str | None = None,
    status: ResultStatus = ResultStatus.PRELIMINARY,
    interpreter: str | None = None,
    priority: str | None = None,
) -> str:
    """The ORU^R01 for a result, as ER7 text with carriage-return segment separators.

    `status` (OBR-25, every OBX-11): preliminary unless a named reviewer accepted the result;
    the placer/filler numbers stay the order's, so a final (F), correction (C) or cancellation
    (X) is filed against the same order and replaces the earlier message.
    `interpreter`: the reviewer, as OBR-32 principal result interpreter (NDL; the name in the
    CNN family-name subcomponent); required for F and C.
    `priority`: OBR-27 Quantity/Timing priority (table 0027, e.g. S) for a RIS that reorders its
    worklist on the result's OBR-27 (`priority_update = "oru-obr27"`).
    """
    status = ResultStatus(status)
    if status.reviewed and not (interpreter and interpreter.strip()):
        raise ValueError("a final or corrected result needs the reviewer (OBR-32)")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"HL7 version {version!r} not supported; use one of {SUPPORTED_VERSIONS}")
    observed_at = hl7_timestamp(ctx.observed_at)
    msg = Message("ORU_R01", version=version, validation_level=VALIDATION_LEVEL.STRICT)
    msg.msh.msh_3 = escape(ctx.sending_application)
    msg.msh.msh_4 = escape(ctx.sending_facility)
    msg.msh.msh_5 = escape(receiving_application)
    if receiving_facility:
        msg.msh.msh_6 = escape(receiving_facility)
    msg.msh.msh_7 = observed_at
    msg.msh.msh_9 = "ORU^R01^ORU_R01"
    msg.msh.msh_10 = control_id or default_control_id(
        ctx.result_id, f"{receiving_application}^{receiving_facility}"
    )
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = version

    patient_result = msg.add_group("ORU_R01_PATIENT_RESULT")
    patient = patient_result.add_group("ORU_R01_PATIENT")
    fill_pid(patient.add_segment("PID"), ctx)

    order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    filler = escape(ctx.filler_order_number or ctx.accession_number)
    orc = order.add_segment("ORC")
    orc.orc_1 = "RE"
    placer = placer_entity_identifier(ctx)
    orc.orc_2 = placer
    orc.orc_3 = filler
    orc.orc_5 = "CM"  # HL7 table 0038: order is completed
    obr = order.add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_2 = placer
    obr.obr_3 = filler
    obr.obr_4 = coded(ctx.procedure)
    obr.obr_7 = observed_at
    obr.obr_18 = escape(ctx.accession_number)
    obr.obr_22 = observed_at
    obr.obr_24 = codes.RADIOLOGY_SECTION.code  # HL7 table 0074
    obr.obr_25 = status.hl7
    if priority:
        obr.obr_27 = quantity_timing(priority)
    if interpreter and interpreter.strip():
        obr.obr_32 = "&" + escape(interpreter.strip())  # NDL.1 CNN: ID number & family name

    obx = _ObxWriter(order, observed_at, status.hl7, equipment_identifier(ctx))
    for number, finding in enumerate(content.findings, start=1):
        sub_id = str(number)
        obx.add("CE", codes.FINDING, coded(finding.finding_type), sub_id=sub_id)
        if finding.site is not None:
            obx.add("CE", codes.FINDING_SITE, coded(finding.site), sub_id=sub_id)
        for m in finding.measurements:
            obx.add("NM", m.concept, _number(m.value), sub_id=sub_id, units=m.unit, method=m.method)
        for q in finding.qualitative:
            obx.add("CE", q.concept, coded(q.value), sub_id=sub_id)
    # The urgent flag where a RIS acts on it: OBX-8 abnormal flag "AA" (HL7 table 0078, v2.4 and
    # v2.5.1: "Very abnormal (applies to non-numeric units, analogous to panic limits for
    # numeric units)") on the recommendation and urgent-flag OBXs; the flag itself stays a Y/N OBX.
    urgent = URGENT_ABNORMAL_FLAG if content.urgent else ""
    for code in content.conclusion_codes:
        obx.add("CE", codes.RECOMMENDATION, coded(code), abnormal=urgent)
    obx.add("CE", codes.URGENT_REVIEW, _YES_NO[content.urgent], abnormal=urgent)
    for line in _narrative_lines(content.text):
        obx.add("TX", codes.AI_IMAGING_RESULT, escape(line))
    return msg.to_er7()


def _narrative_lines(text: str) -> list[str]:
    """The report text as lines of at most TX_WIDTH characters; blank lines kept."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        lines += textwrap.wrap(paragraph, TX_WIDTH, break_long_words=True) or [""]
    return lines


def fill_pid(pid, ctx: ResultContext) -> None:
    p = ctx.patient
    identifiers = []
    if p.nhs_number:
        identifiers.append(f"{escape(p.nhs_number)}^^^{NHS_AUTHORITY}^NH")
    if p.local_id:
        identifiers.append(f"{escape(p.local_id)}^^^{escape(p.local_id_authority or '')}^MR")
    if not identifiers:
        raise ValueError("PID-3 needs an NHS number or a local identifier")
    pid.pid_1 = "1"
    for identifier in identifiers:  # PID-3 repeats
        pid.add_field("PID_3").value = identifier
    pid.pid_5 = f"{escape(p.family_name)}^{escape(p.given_name)}"
    if p.birth_date:
        pid.pid_7 = p.birth_date.strftime("%Y%m%d")
    pid.pid_8 = p.sex
