"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, HL7 v2.5.1 Appendix C.4).

A frame is <VT> payload <FS><CR> (0x0B ... 0x1C 0x0D). `FrameDecoder` turns a byte
stream into frames and framing errors without ever dropping a good frame that follows a
bad one: bytes outside a frame, a frame that never ends before the next start block, and
a frame over the size limit each become one `FramingError` carrying the first bytes
(kept for quarantine), and decoding carries on at the next start block.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB
KEEP_BYTES = 64 * 1024  # how much of a broken frame is kept for ops
_SPACE = b" \t\r\n"


def frame(payload: bytes) -> bytes:
    """Wrap one message in an MLLP envelope."""
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


@dataclass(frozen=True)
class Frame:
    payload: bytes


@dataclass(frozen=True)
class FramingError:
    reason: str
    head: bytes  # the first bytes of what was discarded (at most KEEP_BYTES)
    size: int  # how many bytes were discarded


class FrameDecoder:
    """Incremental MLLP decoder with a maximum frame size."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_frame = False
        self._scanned = 0  # bytes of the current frame already searched for markers
        self._discarding = False  # inside an oversized frame: drop until its end
        self._dropped = 0
        self._junk = bytearray()  # non-frame bytes waiting for the next start block
        self._junk_size = 0

    def feed(self, data: bytes) -> list[Frame | FramingError]:
        self._buf += data
        out: list[Frame | FramingError] = []
        while self._step(out):
            pass
        return out

    def close(self) -> FramingError | None:
        """End of stream: anything left is an unterminated frame or stray bytes."""
        out: list[Frame | FramingError] = []
        if self._in_frame:
            size = self._dropped + len(self._buf)
            err = FramingError("connection closed inside a frame", bytes(self._buf[:KEEP_BYTES]), size)
        else:
            self._collect_junk(len(self._buf))
            self._flush_junk(out)
            err = out[0] if out else None
        self._buf.clear()
        self._in_frame = self._discarding = False
        return err

    def _step(self, out: list) -> bool:
        if not self._in_frame:
            start = self._buf.find(START_BLOCK)
            if start < 0:
                self._collect_junk(len(self._buf))
                return False
            self._collect_junk(start)
            self._flush_junk(out)
            del self._buf[:1]
            self._in_frame, self._scanned, self._dropped, self._discarding = True, 0, 0, False
            return True
        end = self._buf.find(END_BLOCK, self._scanned)
        restart = self._buf.find(START_BLOCK, self._scanned, end if end >= 0 else len(self._buf))
        if restart >= 0:  # a new frame began before this one ended
            if not self._discarding:
                out.append(FramingError("frame not terminated before the next start block",
                                        bytes(self._buf[:min(restart, KEEP_BYTES)]), restart))
            del self._buf[:restart]
            self._in_frame = False
            return True
        if end < 0:
            self._scanned = len(self._buf)
            self._check_size(out)
            return False
        if end + 1 >= len(self._buf):  # wait for the byte after <FS>
            self._scanned = end
            return False
        payload = bytes(self._buf[:end])
        consumed = end + 2 if self._buf[end + 1:end + 2] == CARRIAGE_RETURN else end + 1
        del self._buf[:consumed]
        self._in_frame = False
        if self._discarding:
            self._discarding = False
        elif len(payload) > self.max_frame:
            out.append(FramingError(f"frame exceeds {self.max_frame} bytes", payload[:KEEP_BYTES], len(payload)))
        else:
            out.append(Frame(payload))
        return True

    def _check_size(self, out: list) -> None:
        if len(self._buf) <= self.max_frame and not self._discarding:
            return
        if not self._discarding:
            out.append(FramingError(f"frame exceeds {self.max_frame} bytes", bytes(self._buf[:KEEP_BYTES]),
                                    len(self._buf)))
            self._discarding = True
        self._dropped += len(self._buf)
        del self._buf[:]
        self._scanned = 0

    def _collect_junk(self, n: int) -> None:
        if n <= 0:
            return
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        if chunk.strip(_SPACE) or self._junk:  # line breaks between frames are tolerated
            if len(self._junk) < KEEP_BYTES:
                self._junk += chunk[: KEEP_BYTES - len(self._junk)]
            self._junk_size += len(chunk)

    def _flush_junk(self, out: list) -> None:
        if self._junk.strip(_SPACE):
            out.append(FramingError("data outside an MLLP frame", bytes(self._junk), self._junk_size))
        self._junk.clear()
        self._junk_size = 0
