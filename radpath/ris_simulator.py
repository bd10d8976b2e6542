"""A local RIS that receives ORU^R01 over MLLP and answers as told: AA, AE, AR, late, or not at all.

Used by `radpath demo` (results come back over MLLP) and by the delivery tests.

    ris = RisSimulator(script=["none", "AA"])    # first message unanswered, then AA
    port = ris.start()                            # binds 127.0.0.1, a free port by default
    ...                                           # point an MllpDestination at it
    ris.received                                  # [ReceivedMessage(control_id, message_type, text, answer)]
    ris.stop()

Answers (one per received message, from `script`, then `default`): "AA" | "AE" | "AR";
"late:S" (AA after S seconds); "none" (never answers); "stale" (answers with an AA for a
different control id only — a late ACK that must not be taken for this message).

It keeps a reporting worklist as a RIS does: `ris.worklist.add(accession)` books an exam
(routine unless told), and an accepted ORM^O01 XO (ORC-7 priority) or ORU^R01 with OBR-27
priority (TQ component 6, HL7 table 0027) moves it; `ris.worklist.order()` lists the exams in
reading order: stat, then ASAP, then routine, each in booking order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from integrations.hl7.ack import DATA_TYPE_ERROR, ErrorDetail, acknowledgements
from integrations.hl7.er7 import MessageError, read_header
from integrations.hl7.mllp import Frame, FrameDecoder, frame


READING_ORDER = {"S": 0, "A": 1, "R": 2}  # HL7 table 0027; anything else reads as routine


@dataclass
class Exam:
    accession: str
    priority: str
    booked: int


class Worklist:
    """Exams waiting to be reported, by accession (ORC-3 / OBR-18 in what radpath sends)."""

    def __init__(self) -> None:
        self.exams: dict[str, Exam] = {}
        self.changes: list[tuple[str, str, str]] = []  # (accession, priority, message type)
        self._lock = threading.Lock()

    def add(self, accession: str, priority: str = "R") -> None:
        with self._lock:
            self.exams[accession] = Exam(accession, priority, len(self.exams))

    def order(self) -> list[str]:
        with self._lock:
            exams = sorted(self.exams.values(), key=lambda e: (READING_ORDER.get(e.priority, 2), e.booked))
        return [e.accession for e in exams]

    def apply(self, text: str) -> None:
        """Take the priority an order update or a result carries, for an exam on the list."""
        segments = {line.split("|", 1)[0]: line.split("|") for line in text.replace("\n", "\r").split("\r") if line}
        msh, orc, obr = segments.get("MSH", []), segments.get("ORC", []), segments.get("OBR", [])
        message_type = msh[8] if len(msh) > 8 else ""
        accession = _field(obr, 18) or _field(orc, 3)
        if message_type.startswith("ORM^O01") and _field(orc, 1) == "XO":
            priority = _component(orc, 7, 6) or _component(obr, 27, 6)
        elif message_type.startswith("ORU^R01"):
            priority = _component(obr, 27, 6)
        else:
            return
        with self._lock:
            if priority and accession in self.exams:
                self.exams[accession].priority = priority
                self.changes.append((accession, priority, message_type.split("^", 2)[0] + "^" + message_type.split("^")[1]))


def _field(segment: list[str], number: int) -> str:
    return segment[number] if len(segment) > number else ""


def _component(segment: list[str], number: int, component: int) -> str:
    parts = _field(segment, number).split("^")
    return parts[component - 1] if len(parts) >= component else ""


@dataclass(frozen=True)
class ReceivedMessage:
    control_id: str
    message_type: str
    text: str
    answer: str
    received_at: dt.datetime


class RisSimulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, script: Sequence[str] = (), default: str = "AA"):
        self.host, self.port = host, port
        self.script, self.default = list(script), default
        self.received: list[ReceivedMessage] = []
        self.worklist = Worklist()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> int:
        """Start serving in a background thread; returns the bound port."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._connection, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="ris-simulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> RisSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_answer(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for item in decoder.feed(data):
                    if isinstance(item, Frame):
                        await self._answer(item.payload, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, payload: bytes, writer: asyncio.StreamWriter) -> None:
        text = payload.decode("utf-8", errors="replace")
        answer = self._next_answer()
        try:
            raw = read_header(payload)
        except MessageError:
            return
        header = raw.header
        with self._lock:
            self.received.append(ReceivedMessage(header.control_id, f"{raw.message_type}^{header.trigger}", text,
                                                 answer, dt.datetime.now(dt.UTC)))
        if answer in ("AA", "stale") or answer.startswith("late:"):
            self.worklist.apply(text)  # the RIS acts on what it accepts
        if answer == "none":
            return
        if answer.startswith("late:"):
            await asyncio.sleep(float(answer.split(":", 1)[1]))
            answer = "AA"
        if answer == "stale":
            header = type(header)(**{**header.__dict__, "control_id": f"OLD{header.control_id}"[:20]})
            answer = "AA"
        error = None if answer == "AA" else ErrorDetail("OBR", 4, DATA_TYPE_ERROR, "rejected by the RIS simulator")
        for ack in acknowledgements(header.__class__(**{**header.__dict__, "accept_ack_type": "",
                                                         "application_ack_type": ""}),
                                    answer, error=error, application="RIS_SIM"):
            writer.write(frame(ack.encode()))
        await writer.drain()
