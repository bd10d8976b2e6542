"""Raise an exam's priority at the RIS: an HL7 v2 order update the RIS's worklist acts on.

Pure: no I/O. An urgent AI finding becomes an ORM^O01 with ORC-1 `XO` (HL7 table 0119: change
order request) for the same order (ORC-2/OBR-2 placer, ORC-3/OBR-3 filler, OBR-4 procedure as
sent), carrying the new priority in ORC-7 and OBR-27 Quantity/Timing component 6, Priority
(HL7 table 0027: S stat, A ASAP, R routine). v2.5.1 keeps ORC-7/OBR-27 in ORM^O01 for backward
compatibility (TQ1-9 exists only in OMx messages). The message changes nothing else, and it
goes before the ORU^R01 in the same outbox row, so one ACKed delivery carries both.

The other way a trust's RIS may take priority is OBR-27 in the ORU^R01 itself
(`integrations/hl7/oru.py`, `priority=`). Which one a RIS acts on is the trust's
configuration (`priority_update` on the RIS destination), never the pathway's.
"""

from __future__ import annotations

import hashlib

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from integrations.hl7.oru import (
    SUPPORTED_VERSIONS,
    coded,
    escape,
    fill_pid,
    hl7_timestamp,
    placer_entity_identifier,
    quantity_timing,
)
from pathways.report import ResultContext

CHANGE_ORDER = "XO"  # HL7 table 0119 Order Control Codes: change order/service request


def priority_control_id(result_id: str, destination: str) -> str:
    """MSH-10 of a result's priority update to one destination: the same on every retry."""
    return "RQ" + hashlib.sha256(f"{result_id}|{destination}|priority".encode()).hexdigest()[:18].upper()


def build_priority_update(
    ctx: ResultContext,
    *,
    priority: str = "S",
    version: str = "2.4",
    receiving_application: str = "RIS",
    receiving_facility: str = "",
    control_id: str,
) -> str:
    """ORM^O01 XO raising the order's priority to `priority`, as ER7 text (hl7apy strict)."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"HL7 version {version!r} not supported; use one of {SUPPORTED_VERSIONS}")
    timing = quantity_timing(priority)
    msg = Message("ORM_O01", version=version, validation_level=VALIDATION_LEVEL.STRICT)
    msg.msh.msh_3 = escape(ctx.sending_application)
    msg.msh.msh_4 = escape(ctx.sending_facility)
    msg.msh.msh_5 = escape(receiving_application)
    if receiving_facility:
        msg.msh.msh_6 = escape(receiving_facility)
    msg.msh.msh_7 = hl7_timestamp(ctx.observed_at)
    msg.msh.msh_9 = "ORM^O01^ORM_O01"
    msg.msh.msh_10 = control_id
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = version
    fill_pid(msg.add_group("ORM_O01_PATIENT").add_segment("PID"), ctx)
    order = msg.add_group("ORM_O01_ORDER")
    placer, filler = placer_entity_identifier(ctx), escape(ctx.filler_order_number or ctx.accession_number)
    orc = order.add_segment("ORC")
    orc.orc_1 = CHANGE_ORDER
    orc.orc_2 = placer
    orc.orc_3 = filler
    orc.orc_7 = timing
    detail = order.add_group("ORM_O01_ORDER_DETAIL")
    choice = detail.add_group("ORM_O01_CHOICE" if version == "2.4" else "ORM_O01_OBRRQDRQ1RXOODSODT_SUPPGRP")
    obr = choice.add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_2 = placer
    obr.obr_3 = filler
    obr.obr_4 = coded(ctx.procedure)
    obr.obr_18 = escape(ctx.accession_number)
    obr.obr_27 = timing
    return msg.to_er7()
