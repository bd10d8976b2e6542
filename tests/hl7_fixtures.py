"""Shared HL7 test messages and an in-thread MLLP listener for the tests/test_hl7_*.py files."""

from __future__ import annotations

import asyncio
import socket
import threading

from integrations.db.batch import BatchCommitter
from integrations.hl7.intake import Intake, IntakeConfig, Reply
from integrations.hl7.listener import ListenerConfig, MllpListener
from integrations.hl7.mllp import Frame, FrameDecoder, frame
from pathways.registry import default_registry

NHS = "9434765919"  # valid modulus-11 (also used by tests/test_ledger.py)
CHEST_CT = "169069000^Computed tomography of chest^SCT"


def order(control: str = "MSG0001", *, version: str = "2.4", control_code: str = "NW", placer: str = "PL123",
          accession: str = "ACC00001", procedure: str = CHEST_CT, modality: str = "CT", nhs: str = NHS,
          sender: str = "SYNTH_RIS", charset: str = "", ack_types: tuple[str, str] = ("", ""),
          family: str = "SMITH") -> str:
    """An ORM^O01 (v2.3/2.3.1/2.4/2.5) or, for version 2.5.1, an OMI^O23 imaging order."""
    omi = version == "2.5.1"
    msg_type = "OMI^O23^OMI_O23" if omi else ("ORM^O01" if version == "2.3" else "ORM^O01^ORM_O01")
    msh = ["MSH", "^~\\&", sender, "RXX01", "RADPATH", "RADPATH", "20261129101500", "", msg_type, control, "P",
           version, "", "", ack_types[0], ack_types[1], "", charset]
    segments = [
        "|".join(msh).rstrip("|"),
        f"PID|1||{nhs}^^^NHS^NH~H123456^^^RXX01^MR||{family}^JANE||19580312|F",
        "PV1|1|O|RADIOLOGY^^^RXX01",
        f"ORC|{control_code}|{placer}^OCS|{accession}^RIS||||" + ("" if omi else "^^^20261129^^R")
        + "||20261129|||C1234567^JONES^ALAN",
    ]
    if omi:
        segments.append("TQ1|1||||||||S")
    segments.append(f"OBR|1|{placer}^OCS|{accession}^RIS|{procedure}|||20261129||||||Cough|||"
                    f"C1234567^JONES^ALAN||{accession}||||||{modality}|||||||^Suspected lung cancer")
    if omi:
        segments.append(f"IPC|{accession}^RIS|RP1|1.2.826.0.1.3680043.8.498.1|SPS1|{modality}")
    return "\r".join(segments) + "\r"


def adt(control: str, *, event: str = "A08", family: str = "JONES", nhs: str = NHS, version: str = "2.4") -> str:
    return "\r".join([
        f"MSH|^~\\&|PAS|RXX01|RADPATH|RADPATH|20261129111500||ADT^{event}^ADT_A01|{control}|P|{version}",
        f"EVN|{event}|20261129111500",
        f"PID|1||{nhs}^^^NHS^NH~H123456^^^RXX01^MR||{family}^JANE||19580312|F",
        "PV1|1|O",
    ]) + "\r"


def exam_completed(order_text: str, control_id: str) -> str:
    """The RIS's status change for the same order: ORC-1 SC, ORC-5 CM (HL7 table 0038, "order is
    completed"), a new MSH-10."""
    segments = order_text.strip("\r\n").replace("\r\n", "\r").replace("\n", "\r").split("\r")
    for i, segment in enumerate(segments):
        fields = segment.split("|")
        if fields[0] == "MSH":
            fields[9] = control_id
        elif fields[0] == "ORC":
            fields[1] = "SC"
            fields += [""] * max(0, 6 - len(fields))
            fields[5] = "CM"
        segments[i] = "|".join(fields)
    return "\r".join(segments) + "\r"


def msa(ack: bytes | str) -> tuple[str, str]:
    text = ack.decode() if isinstance(ack, bytes) else ack
    fields = next(s for s in text.strip("\x0b\x1c\r").split("\r") if s.startswith("MSA")).split("|")
    return fields[1], fields[2]


def err(ack: bytes | str) -> str:
    text = ack.decode() if isinstance(ack, bytes) else ack
    return next((s for s in text.strip("\x0b\x1c\r").split("\r") if s.startswith("ERR")), "")


def receive(raw: str, registry=None) -> Reply:  # noqa: ANN001 - pathways.registry.Registry
    """One HL7 message through radpath's intake, the MLLP listener's own path less the socket
    (parse, check, commit, ACK): how tests put an order in the ledger. An order that is not
    acknowledged AA fails the test with its ERR."""
    intake = Intake(registry or default_registry())
    try:
        reply = asyncio.run(intake.handle_frame(raw.encode("utf-8")))
    finally:
        intake.close()
    if msa(reply.acks[-1])[0] != "AA":
        raise AssertionError(f"order not accepted: {err(reply.acks[-1])}")
    return reply


class ThreadedListener:
    """radpath's MLLP listener on 127.0.0.1:<free port>, its event loop in a background thread."""

    def __init__(self, config: ListenerConfig | None = None, intake_config: IntakeConfig | None = None):
        self.events: list = []
        self.orders: list = []
        config = config or ListenerConfig(port=0, idle_timeout_s=30)
        self.intake = Intake(default_registry(), intake_config or config.intake, BatchCommitter())
        self.listener = MllpListener(self.intake, config, self.orders.append, self.events.append)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedListener:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.listener.start(), self.loop).result(10)
        self.port = self.listener.port
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class RawConnection:
    """A bare socket for sending arbitrary bytes and reading back whole frames."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = FrameDecoder()
        self.frames: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_message(self, text: str) -> None:
        self.send(frame(text.encode()))

    def read_frame(self) -> bytes | None:
        """The next frame, or None when the peer closed the connection."""
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames += [i.payload for i in self.decoder.feed(data) if isinstance(i, Frame)]
        return self.frames.pop(0)

    def close(self) -> None:
        self.sock.close()
