"""A blocking MLLP client: send a message, wait for *its* ACK.

An ACK counts only when its MSA-2 equals the MSH-10 just sent; anything else arriving on
the connection (a late ACK for an earlier message, an unsolicited message) is skipped, so a
late answer is never taken for the current message.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from integrations.errors import PermanentError, TransientError, masked
from integrations.hl7.er7 import CHARSETS, MessageError, read_header, split_segments
from integrations.hl7.mllp import Frame, FrameDecoder, frame

log = logging.getLogger("radpath.hl7")


@dataclass(frozen=True)
class AckResult:
    code: str  # MSA-1: AA AE AR CA CE CR
    control_id: str  # MSA-2
    error_code: str  # ERR code (table 0357) when present
    raw: str
    text: str = ""  # MSA-3, else the ERR's user message / code text: what the receiver said

    @property
    def peer(self) -> dict[str, str]:
        """The ACK as the audit trail keeps it (free text masked)."""
        said = {"ack_code": self.code, "control_id": self.control_id}
        if self.error_code:
            said["error_code"] = self.error_code
        if self.text:
            said["text"] = masked(self.text)
        return said

    @property
    def accepted(self) -> bool:
        return self.code in {"AA", "CA"}


class AckTimeout(TransientError):
    """No ACK for the message within the timeout."""


def parse_ack(text: str) -> AckResult | None:
    """MSA-1/MSA-2 (and the ERR code) of an ACK; None when the text has no MSA."""
    segments = split_segments(text)
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        return None
    sep, comp = segments[0][3], segments[0][4]
    msa = next((s.split(sep) for s in segments if s.startswith("MSA")), None)
    if msa is None or len(msa) < 3:
        return None
    error_code, error_text = "", ""
    sub = segments[0][7] if len(segments[0]) > 7 else "&"
    for seg in segments:
        if seg.startswith("ERR"):
            fields = seg.split(sep)
            if len(fields) > 3 and fields[3]:  # v2.5+: ERR-3 (CWE: code^text), ERR-8 user message
                parts = fields[3].split(comp)
                error_code = parts[0]
                error_text = (fields[8] if len(fields) > 8 else "") or (parts[1] if len(parts) > 1 else "")
            elif len(fields) > 1:  # before v2.5: ERR-1 ELD, the code (CE) in the 4th component
                parts = fields[1].split(comp)
                coded = parts[3].split(sub) if len(parts) > 3 else [""]
                error_code, error_text = coded[0], coded[1] if len(coded) > 1 else ""
            break
    said = msa[3].strip() if len(msa) > 3 else ""
    return AckResult(msa[1].strip(), msa[2].strip(), error_code, text, said or error_text.strip())


def _codec(message: str) -> str:
    try:
        charset = read_header(message.encode("utf-8")).charset
    except MessageError:
        return "utf-8"
    return CHARSETS.get(charset.upper(), "utf-8") if charset else "utf-8"


class MllpClient:
    """One MLLP connection; `send()` may be called many times on it."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 5.0, ack_timeout: float = 30.0):
        self.host, self.port = host, port
        self.connect_timeout, self.ack_timeout = connect_timeout, ack_timeout
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._pending: list[Frame] = []

    def __enter__(self) -> MllpClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise TransientError(f"MLLP connect to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise TransientError(f"MLLP connect to {self.host}:{self.port} failed ({exc.__class__.__name__})") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, message: str) -> AckResult:
        """Send one message and return the ACK whose MSA-2 is its MSH-10."""
        if self._sock is None:
            self.connect()
        try:
            control_id = read_header(message.encode("utf-8")).header.control_id
        except MessageError as exc:
            raise PermanentError(f"message to send has no readable MSH ({exc.detail.text})") from None
        try:
            self._sock.sendall(frame(message.encode(_codec(message))))
        except OSError as exc:
            self.close()
            raise TransientError(f"MLLP send failed ({exc.__class__.__name__})") from exc
        deadline = time.monotonic() + self.ack_timeout
        while True:
            for item in self._frames(deadline):
                ack = parse_ack(item.payload.decode("utf-8", errors="replace"))
                if ack is not None and ack.control_id == control_id:
                    return ack
                log.info("MLLP: skipped a frame that does not answer control id %s", control_id)

    def _frames(self, deadline: float) -> list[Frame]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.close()
            raise AckTimeout(f"no ACK from {self.host}:{self.port} within {self.ack_timeout:g} s")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            self.close()
            raise AckTimeout(f"no ACK from {self.host}:{self.port} within {self.ack_timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise TransientError(f"MLLP connection lost ({exc.__class__.__name__})") from exc
        if not data:
            self.close()
            raise TransientError(f"MLLP peer {self.host}:{self.port} closed the connection before the ACK")
        return [i for i in self._decoder.feed(data) if isinstance(i, Frame)]


def send_messages(host: str, port: int, messages: Sequence[str], *, ack_timeout: float = 30.0) -> list[AckResult]:
    """Send messages over one connection, in order, each waiting for its ACK (the demo's RIS side)."""
    with MllpClient(host, port, ack_timeout=ack_timeout) as client:
        return [client.send(m) for m in messages]
