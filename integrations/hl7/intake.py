"""From one MLLP frame to a committed ledger entry and the ACKs owed — no sockets here.

Order of work for each message (never changed): read the MSH by hand → a resend? answer
with the stored ACK → decode (MSH-18) → parse and check (hl7apy, off the event loop) →
commit message + order + the ACK itself in one transaction → only then hand the ACK to the
listener → events after the ACK is sent. A message that fails any check is committed too
(rejected, its bytes quarantined) and answered AE/AR with an ERR naming the field.

Commits go through `integrations.db.batch.BatchCommitter`: one writer thread that commits whatever messages
arrived together in one transaction (one fsync), so the ledger does not cap throughput.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the unit of work the ledger's batch committer hands in; the intake never opens one
    from sqlmodel import Session

from integrations.db import messages, orders, radiologist_reports
from integrations.db.batch import BatchCommitter
from integrations.db.orders import Conflict, OrderOutcome
from integrations.errors import InvalidInput
from integrations.hl7.ack import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    DUPLICATE_KEY_IDENTIFIER,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY_IDENTIFIER,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_PROCESSING_ID,
    UNSUPPORTED_VERSION_ID,
    ErrorDetail,
    Header,
    acknowledgements,
)
from integrations.hl7.adt import ADT_EVENTS, parse_adt
from integrations.hl7.reports import parse_final_report
from pathways.code_checks import procedure_code_problem
from pathways.orders import PatientMerge
from integrations.hl7.er7 import MessageError, RawHeader, decode, field_value, read_header, split_segments
from integrations.hl7.mllp import FramingError
from integrations.hl7.orders import PRIORITY, parse_order
from pathways.registry import Registry

log = logging.getLogger("radpath.hl7")

ORDER_TRIGGERS = {"ORM": "O01", "OMI": "O23"}
VERSIONS = {
    "ORM": {"2.3", "2.3.1", "2.4", "2.5", "2.5.1"},
    "OMI": {"2.4", "2.5", "2.5.1"},
    "ADT": {"2.3", "2.3.1", "2.4", "2.5", "2.5.1"},
    "ORU": {"2.3", "2.3.1", "2.4", "2.5", "2.5.1"},
}
ORDER_CONTROLS = {"NW", "CA", "XO", "SC"}  # HL7 table 0119: new, cancel, change, status changed
ACK_SEPARATOR = "\x1c"  # between stored ACKs (enhanced mode stores two); never inside ER7


@dataclass(frozen=True)
class IntakeConfig:
    application: str = "RADPATH"  # our MSH-3 in ACKs
    facility: str = ""
    default_charset: str = "ASCII"  # when MSH-18 is empty (HL7 default)
    on_commit_failure: Literal["AR", "close"] = "AR"  # never AA without a commit
    commit: bool = True  # False: parse-only baseline for the benchmark (nothing stored)


@dataclass(frozen=True)
class IntakeEvent:
    """Something to tell Prefect after the ACK: opaque ids only."""

    event: str  # order.received | order.cancelled | order.changed | patient.updated | patient.merged | report.received | message.rejected
    kind: str  # order | inbound_message | hl7_quarantine
    entity_id: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    acks: list[str]
    close: bool = False  # close the connection without answering (commit failed, "close" policy)
    order: OrderOutcome | None = None
    events: list[IntakeEvent] = field(default_factory=list)
    status: str = "accepted"  # accepted | rejected | duplicate | failed


# ---------------------------------------------------------------- group commit

# ---------------------------------------------------------------- parsing

_FIELD_ERROR = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:-(?P<field>\d+))?: (?P<text>.*)$", re.S)


def _detail_from(exc: InvalidInput) -> ErrorDetail:
    """InvalidInput("PID-3: ...") → ERR detail (table 0357 code chosen by the kind of fault)."""
    match = _FIELD_ERROR.match(str(exc))
    if not match:
        return ErrorDetail("MSH", None, DATA_TYPE_ERROR, str(exc)[:200])
    text = match["text"]
    code = (REQUIRED_FIELD_MISSING if ("missing" in text or text.startswith("no "))
            else TABLE_VALUE_NOT_FOUND if "(HL7 table " in text else DATA_TYPE_ERROR)
    return ErrorDetail(match["seg"], int(match["field"]) if match["field"] else None, code, text)


def check_supported(raw: RawHeader) -> str:
    """"order", "adt" or "report"; otherwise MessageError (AR) naming MSH-9, MSH-11 or MSH-12."""
    header = raw.header
    kind = raw.message_type
    if kind in ORDER_TRIGGERS:
        if header.trigger != ORDER_TRIGGERS[kind]:
            raise MessageError(ErrorDetail("MSH", 9, UNSUPPORTED_EVENT_CODE, f"{kind} trigger event not supported"), True)
    elif kind == "ADT":
        if header.trigger not in ADT_EVENTS:
            raise MessageError(ErrorDetail("MSH", 9, UNSUPPORTED_EVENT_CODE,
                                           "only ADT^A08, ADT^A31 and ADT^A40 are accepted"), True)
    elif kind == "ORU":
        if header.trigger != "R01":
            raise MessageError(ErrorDetail("MSH", 9, UNSUPPORTED_EVENT_CODE, "only ORU^R01 is accepted"), True)
    else:
        raise MessageError(ErrorDetail("MSH", 9, UNSUPPORTED_MESSAGE_TYPE,
                                       "accepted: ORM^O01, OMI^O23, ADT^A08, ADT^A31, ADT^A40, ORU^R01"), True)
    if header.version not in VERSIONS[kind]:
        raise MessageError(ErrorDetail("MSH", 12, UNSUPPORTED_VERSION_ID,
                                       f"{kind} accepted in versions {', '.join(sorted(VERSIONS[kind]))}"), True)
    if header.processing_id not in {"P", "T", "D", ""}:
        raise MessageError(ErrorDetail("MSH", 11, UNSUPPORTED_PROCESSING_ID, "processing id must be P, T or D"), True)
    return "order" if kind in ORDER_TRIGGERS else "report" if kind == "ORU" else "adt"


# Segments a radpath message may hold once only. ORM^O01/OMI^O23 (HL7 v2.5.1 ch. 4.4.1,
# 4.4.6) allow one patient group and repeat the order group; radpath records one order per
# message, so a second ORC/OBR is refused rather than silently dropped (a lost order).
# ADT^A08/A31 (ch. 3.3.8, 3.3.31) carry one PID; radpath takes an ADT^A40 (ch. 3.3.40, whose
# patient group may repeat) one merge at a time: one PID and one MRG; an ORU^R01 (ch. 7.3.1) one
# signed report of one exam: one OBR.
_ONCE = {"order": ("MSH", "PID", "ORC", "OBR"), "adt": ("MSH", "PID", "MRG"), "report": ("MSH", "PID", "OBR")}


def structure_problem(segments: list[str], kind: str) -> ErrorDetail | None:
    """A segment that must appear once but repeats (two PIDs = two patients in one order:
    a wrong-patient hazard), as an ERR detail naming it; None when the structure holds."""
    names = [s[:3] for s in segments]
    for name in _ONCE[kind]:
        count = names.count(name)
        if count > 1:
            why = "one order per message" if name in {"ORC", "OBR"} else "one per message"
            return ErrorDetail(name, None, SEGMENT_SEQUENCE_ERROR, f"{count} {name} segments; radpath takes {why}",
                               sequence=2)
    return None


def parse_for_intake(text: str, kind: str):  # noqa: ANN201 - OrderRequest | PatientUpdate | PatientMerge
    """Parse (hl7apy) and check one decoded message; MessageError names the field at fault."""
    problem = structure_problem(split_segments(text), kind)
    if problem:
        raise MessageError(problem)
    try:
        if kind == "adt":
            return parse_adt(text)
        if kind == "report":
            return parse_final_report(text)
        order = parse_order(text)
    except InvalidInput as exc:
        raise MessageError(_detail_from(exc)) from None
    except Exception as exc:  # noqa: BLE001 - hl7apy raises many kinds on malformed input
        raise MessageError(ErrorDetail("MSH", None, DATA_TYPE_ERROR,
                                       f"message cannot be parsed ({exc.__class__.__name__})")) from None
    if order.order_control not in ORDER_CONTROLS:
        raise MessageError(ErrorDetail("ORC", 1, TABLE_VALUE_NOT_FOUND, "order control must be NW, CA, XO or SC"))
    if order.order_control in {"NW", "XO"}:
        problem = procedure_code_problem(order.procedure_code, order.procedure_system)
        if problem:
            raise MessageError(ErrorDetail("OBR", 4, TABLE_VALUE_NOT_FOUND, problem))
    segments = split_segments(text)
    clinician = field_value(segments, "ORC", 12, components=3) or field_value(segments, "OBR", 16, components=3)
    location = field_value(segments, "PV1", 3, components=4)
    tq1_priority = field_value(segments, "TQ1", 9, components=1)  # v2.5+: priority moved to TQ1-9
    extra: dict[str, Any] = {"ordering_clinician": clinician, "ordering_location": location}
    if tq1_priority:
        extra["priority"] = PRIORITY.get(tq1_priority[:1].upper(), order.priority)
    return dataclasses.replace(order, **extra)


def _exit_with_parent(parent_pid: int) -> None:
    """Parse workers end when the listener dies (even by SIGKILL), never lingering as orphans."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _warm_up() -> None:
    """Import hl7apy's version tables in a worker before the first real message."""
    for version in ("2.3", "2.4", "2.5.1"):
        try:
            parse_for_intake(f"MSH|^~\\&|W|W|W|W|20260101||ORM^O01|W|P|{version}\rPID|1", "order")
        except MessageError:
            pass


def conflict_detail(conflict: Conflict) -> ErrorDetail:
    """The ERR of an order refused because its placer number or accession names another
    patient's (or another) order: HL7 table 0357 code 205, at ORC-2 or OBR-18."""
    segment, number = ("ORC", 2) if conflict.field == "placer" else ("OBR", 18)
    return ErrorDetail(segment, number, DUPLICATE_KEY_IDENTIFIER, conflict.text)


# ---------------------------------------------------------------- intake

class Intake:
    """Turns frames into ledger entries and ACKs. One instance per listener."""

    def __init__(self, registry: Registry, config: IntakeConfig | None = None,
                 committer: BatchCommitter | None = None, parse_processes: int = 0):
        """parse_processes: 0 parses in a thread of this process; N > 0 in N worker processes
        (hl7apy is pure Python and CPU-bound: a process lets parsing and committing overlap)."""
        self.registry = registry
        self.config = config or IntakeConfig()
        self.committer = committer or BatchCommitter()
        if parse_processes > 0:
            context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
            self._parser = ProcessPoolExecutor(max_workers=parse_processes, mp_context=context,
                                               initializer=_exit_with_parent, initargs=(os.getpid(),))
            for future in [self._parser.submit(_warm_up) for _ in range(parse_processes)]:
                future.result(timeout=120)
        else:
            self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7-parse")
        self._inflight: dict[tuple[str, str, str], asyncio.Future] = {}

    def close(self) -> None:
        self.committer.close()
        self._parser.shutdown(wait=False, cancel_futures=True)

    def _acks(self, header: Header, code: str, error: ErrorDetail | None, stored: bool) -> list[str]:
        return acknowledgements(header, code, error=error, stored=stored,
                                application=self.config.application, facility=self.config.facility)

    async def handle_frame(self, payload: bytes, peer: str = "") -> Reply:
        try:
            raw = read_header(payload)
        except MessageError as exc:
            return await self._reject(payload, None, exc.detail, reject=True, peer=peer, text=None)
        header = raw.header
        if not header.control_id:
            detail = ErrorDetail("MSH", 10, REQUIRED_FIELD_MISSING, "message control id missing")
            return await self._reject(payload, raw, detail, reject=True, peer=peer, text=None, keep_identity=False)
        ident = (header.sending_application, header.sending_facility, header.control_id)
        earlier = self._inflight.get(ident)
        if earlier is not None:  # the same message is being committed right now
            first: Reply = await asyncio.shield(earlier)
            return Reply(acks=first.acks, close=first.close, status="duplicate")
        future = asyncio.get_running_loop().create_future()
        self._inflight[ident] = future
        try:
            reply = await self._handle(payload, raw, peer)
            future.set_result(reply)
            return reply
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._inflight[ident]

    async def _handle(self, payload: bytes, raw: RawHeader, peer: str) -> Reply:
        header = raw.header
        loop = asyncio.get_running_loop()
        # the resend lookup runs beside the parse (a sequential sender waits for both)
        lookup = loop.run_in_executor(None, self._stored_ack, header) if self.config.commit else None
        text, failure = None, None
        try:
            text = decode(payload, raw.charset, self.config.default_charset)
            kind = check_supported(raw)
            parsed = await loop.run_in_executor(self._parser, parse_for_intake, text, kind)
        except MessageError as exc:
            failure = exc
        stored = await lookup if lookup is not None else None
        if stored is not None:
            return Reply(acks=stored, status="duplicate")
        if failure is not None:
            return await self._reject(payload, raw, failure.detail, reject=failure.reject, peer=peer, text=text)
        if not self.config.commit:
            return Reply(acks=self._acks(header, "AA", None, stored=True))

        def unit(session: Session) -> Reply:
            return self._accept(session, header, raw, text, kind, parsed)

        return await self._commit(unit, header)

    def _stored_ack(self, header: Header, session: Session | None = None) -> list[str] | None:
        """The ACKs already sent for this message (a resend), or None."""
        ack = (messages.stored_ack(session, header.sending_application, header.sending_facility, header.control_id)
               if session is not None else
               messages.stored_ack_now(header.sending_application, header.sending_facility, header.control_id))
        return ack.split(ACK_SEPARATOR) if ack else None

    async def _commit(self, unit: Callable[[Session], Reply], header: Header) -> Reply:
        try:
            return await self.committer.run(unit)
        except Exception as exc:  # noqa: BLE001 - the ledger failed: never AA
            log.error("ledger commit failed (%s); no AA sent", exc.__class__.__name__)
            if self.config.on_commit_failure == "close":
                return Reply(acks=[], close=True, status="failed")
            detail = ErrorDetail("MSH", None, APPLICATION_INTERNAL_ERROR, "ledger unavailable; resend later")
            return Reply(acks=self._acks(header, "AR", detail, stored=False), status="failed")

    def _accept(self, session: Session, header: Header, raw: RawHeader, text: str, kind: str, parsed) -> Reply:  # noqa: ANN001
        stored = self._stored_ack(header, session)
        if stored is not None:
            return Reply(acks=stored, status="duplicate")
        message_type = f"{raw.message_type}^{header.trigger}"
        if kind == "order" and parsed.order_control == "NW":  # the common case, without ORM objects
            message = messages.message_values(application=header.sending_application,
                                              facility=header.sending_facility, control_id=header.control_id,
                                              message_type=message_type, raw=text)
            acks: list[str] = []

            def answer(conflict: Conflict | None) -> str:  # the ACK is stored with the message
                acks[:] = self._acks(header, "AE" if conflict else "AA",
                                     conflict_detail(conflict) if conflict else None, stored=True)
                return ACK_SEPARATOR.join(acks)

            outcome = orders.record(session, parsed, message, self.registry, actor="hl7", answer=answer)
            if isinstance(outcome, Conflict):
                log.warning("HL7 order refused (AE): %s", outcome.text)
                return Reply(acks=acks, status="rejected")
            events = [] if outcome.duplicate else [IntakeEvent(
                "order.received", "order", outcome.order_id, {"eligible": outcome.eligible, "runs": len(outcome.run_ids)})]
            return Reply(acks=acks, order=outcome, events=events, status="duplicate" if outcome.duplicate else "accepted")
        message = messages.add_message(session, application=header.sending_application,
                                       facility=header.sending_facility, control_id=header.control_id,
                                       message_type=message_type, raw=text)
        reply = Reply(acks=[])
        error = None
        if kind == "report":
            row = radiologist_reports.record_report(session, parsed, message.id, actor="hl7")
            if row is not None:
                reply.events.append(IntakeEvent("report.received", "radiologist_report", row.id,
                                                {"status": parsed.result_status}))
        elif kind == "adt" and isinstance(parsed, PatientMerge):
            merged = orders.merge_patient(session, parsed, message.id, actor="hl7")
            reply.events.append(IntakeEvent("patient.merged", "inbound_message", message.id, {"orders": len(merged)}))
        elif kind == "adt":
            updated = orders.update_patient(session, parsed, message.id, actor="hl7")
            reply.events.append(IntakeEvent("patient.updated", "inbound_message", message.id, {"orders": len(updated)}))
        else:
            change = {"CA": lambda: orders.cancel(session, parsed, message.id, actor="hl7",
                                                  reason="order cancelled by the placer (ORC-1 CA)"),
                      "XO": lambda: orders.change(session, parsed, message.id, self.registry, actor="hl7"),
                      "SC": lambda: orders.note_status(session, parsed, message.id, actor="hl7")}[parsed.order_control]()
            if change is None:
                error = ErrorDetail("ORC", 2, UNKNOWN_KEY_IDENTIFIER, "no order with this placer order number")
            elif isinstance(change, Conflict):
                error = conflict_detail(change)
            elif change.action != "status-noted":
                reply.events.append(IntakeEvent(f"order.{change.action}", "order", change.order_id,
                                                {"runs": len(change.run_ids)}))
        reply.acks = self._acks(header, "AE" if error else "AA", error, stored=True)
        reply.status = "rejected" if error else "accepted"
        messages.answer(message, ACK_SEPARATOR.join(reply.acks),
                        rejected=f"{error.location}: {error.text}" if error is not None else None)
        return reply

    async def _reject(self, payload: bytes, raw: RawHeader | None, detail: ErrorDetail, *, reject: bool, peer: str,
                      text: str | None, keep_identity: bool = True, size: int | None = None) -> Reply:
        header = raw.header if raw is not None else Header()
        code = "AR" if reject else "AE"
        acks = self._acks(header, code, detail, stored=not reject)
        log.warning("HL7 message rejected (%s) at %s: %s", code, detail.location, detail.text)
        if not self.config.commit:
            return Reply(acks=acks, status="rejected")
        identity = keep_identity and raw is not None and bool(header.control_id)

        def unit(session: Session) -> Reply:
            message_id = None
            if identity:
                stored = self._stored_ack(header, session)
                if stored is not None:
                    return Reply(acks=stored, status="duplicate")
                message = messages.add_message(
                    session, application=header.sending_application, facility=header.sending_facility,
                    control_id=header.control_id, message_type=f"{raw.message_type}^{header.trigger}",
                    raw=text if text is not None else payload.decode("latin-1"), status="rejected",
                    error=f"{detail.location}: {detail.text}", )
                messages.answer(message, ACK_SEPARATOR.join(acks))
                message_id = message.id
            qid = messages.quarantine(session, raw=payload, reason=detail.text, location=detail.location, peer=peer,
                                control_id=header.control_id or None, message_id=message_id,
                                ack=ACK_SEPARATOR.join(acks), size=size)
            return Reply(acks=acks, status="rejected",
                         events=[IntakeEvent("message.rejected", "hl7_quarantine", qid, {"location": detail.location})])

        return await self._commit(unit, header)

    async def handle_framing_error(self, error: FramingError, peer: str = "") -> Reply:
        """Quarantine what broke the framing; answer AR when it looked like a message."""
        try:
            raw = read_header(error.head)
        except MessageError:
            raw = None
        detail = ErrorDetail("MSH", None, APPLICATION_INTERNAL_ERROR, f"MLLP framing: {error.reason}")
        reply = await self._reject(error.head, raw, detail, reject=True, peer=peer, text=None,
                                   keep_identity=False, size=error.size)
        if error.reason.startswith("data outside"):
            reply.acks = []  # nothing was framed, so nothing is owed
        return reply
