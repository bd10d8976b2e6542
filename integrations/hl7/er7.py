"""Reading raw ER7 before (and beside) hl7apy: the MSH header, the character set, bad bytes.

The header is read by hand so that every message — even one hl7apy cannot parse — can be
answered with an ACK that names the sender's MSH-10, and so a resend is recognised before
any expensive parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.hl7.ack import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
    ErrorDetail,
    Header,
)

ACK_CONDITIONS = {"", "AL", "NE", "ER", "SU"}  # HL7 table 0155 (empty: original mode)
# HL7 table 0211 (MSH-18 alternate character sets) → Python codecs radpath accepts
CHARSETS = {"ASCII": "ascii", "8859/1": "latin-1", "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8"}
_BAD_CONTROL = {chr(c) for c in range(0x20) if c not in (0x0D,)} | {"\x7f"}


class MessageError(Exception):
    """The message breaks HL7 at a known place; `detail` says where (never patient data)."""

    def __init__(self, detail: ErrorDetail, reject: bool = False):
        super().__init__(detail, reject)  # picklable: parsing may run in a worker process
        self.detail = detail
        self.reject = reject  # AR (cannot be processed at all) rather than AE

    def __str__(self) -> str:
        return f"{self.detail.location}: {self.detail.text}"


@dataclass(frozen=True)
class RawHeader:
    header: Header
    message_type: str  # e.g. "ORM"
    structure: str
    charset: str  # MSH-18 as sent


def split_segments(text: str) -> list[str]:
    """Segments, accepting \\r (the standard), \\r\\n or \\n as terminators."""
    return [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s.strip()]


def read_header(payload: bytes) -> RawHeader:
    """The MSH fields of a message, read from the raw bytes (ASCII-compatible charsets)."""
    first = payload.lstrip(b"\r\n ").split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    if not first.startswith("MSH") or len(first) < 8:
        raise MessageError(ErrorDetail("MSH", None, REQUIRED_FIELD_MISSING, "message does not start with an MSH segment"),
                           reject=True)
    sep = first[3]
    if sep.isalnum() or sep in "\r\n ":
        raise MessageError(ErrorDetail("MSH", 1, DATA_TYPE_ERROR, "invalid field separator"), reject=True)
    fields = first.split(sep)
    encoding = fields[1]
    if (not 4 <= len(encoding) <= 5 or len(set(encoding)) < len(encoding) or sep in encoding
            or not all(c.isascii() and c.isprintable() and not c.isalnum() and c != " " for c in encoding)):
        raise MessageError(ErrorDetail("MSH", 2, DATA_TYPE_ERROR, "invalid encoding characters"), reject=True)
    comp = encoding[0]

    def field(n: int) -> str:  # MSH-n; MSH-1 is the separator itself
        return fields[n - 1] if len(fields) >= n else ""

    def first_component(n: int) -> str:
        return field(n).split(comp)[0].strip()

    msg_type = field(9).split(comp)
    header = Header(
        sending_application=first_component(3),
        sending_facility=first_component(4),
        receiving_application=first_component(5),
        receiving_facility=first_component(6),
        control_id=field(10).strip(),
        trigger=msg_type[1].strip() if len(msg_type) > 1 else "",
        processing_id=first_component(11),
        version=first_component(12),
        accept_ack_type=field(15).strip(),
        application_ack_type=field(16).strip(),
    )
    if len(header.control_id) > 199 or any(c in header.control_id for c in encoding[:2]):
        raise MessageError(ErrorDetail("MSH", 10, DATA_TYPE_ERROR, "message control id is not a valid ST value"),
                           reject=True)
    for n, value in ((15, header.accept_ack_type), (16, header.application_ack_type)):
        if value not in ACK_CONDITIONS:
            raise MessageError(ErrorDetail("MSH", n, TABLE_VALUE_NOT_FOUND, "acknowledgment type must be AL, NE, ER or SU"),
                               reject=True)
    return RawHeader(header, msg_type[0].strip(), msg_type[2].strip() if len(msg_type) > 2 else "", field(18).strip())


def locate(text: str, index: int) -> tuple[str, int, int | None]:
    """(segment id, its sequence among segments with that id, field number) of a character."""
    norm = text.replace("\n", "\r")
    before = norm[:index]
    seg_start = before.rfind("\r") + 1
    seg_id = norm[seg_start:seg_start + 3] or "MSH"
    sequence = sum(1 for s in before[:seg_start].split("\r") if s[:3] == seg_id) + 1
    sep = norm[3] if len(norm) > 3 else "|"
    field_no = before[seg_start:].count(sep) + (1 if seg_id == "MSH" else 0)
    return seg_id, sequence, field_no or None


def decode(payload: bytes, charset: str, default: str = "ASCII") -> str:
    """Decode by MSH-18 (table 0211); a byte or control character that does not belong fails
    with the segment and field it sits in."""
    name = (charset or default).upper()
    codec = CHARSETS.get(name)
    if codec is None:
        raise MessageError(ErrorDetail("MSH", 18, TABLE_VALUE_NOT_FOUND,
                                       "character set not supported (use ASCII, 8859/1, 8859/15 or UNICODE UTF-8)"),
                           reject=True)
    try:
        text = payload.decode(codec)
    except UnicodeDecodeError as exc:
        seg, seq, fld = locate(payload[: exc.start].decode("latin-1"), exc.start)
        raise MessageError(ErrorDetail(seg, fld, DATA_TYPE_ERROR,
                                       f"byte not valid in character set {name}", sequence=seq)) from None
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    bad = next((i for i, ch in enumerate(text) if ch in _BAD_CONTROL), None)
    if bad is not None:
        seg, seq, fld = locate(text, bad)
        raise MessageError(ErrorDetail(seg, fld, DATA_TYPE_ERROR, "control character not allowed", sequence=seq))
    return text


def field_value(segments: list[str], segment_id: str, number: int, *, components: int | None = None) -> str:
    """Text of field `number` of the first `segment_id` segment (first repetition), optionally
    only its first `components` components; "" when absent. Escapes are left as sent."""
    if not segments:
        return ""
    sep, comp, rep = segments[0][3], segments[0][4], segments[0][5]
    for segment in segments:
        if segment[:3] != segment_id:
            continue
        fields = segment.split(sep)
        index = number - 1 if segment_id == "MSH" else number
        value = fields[index].split(rep)[0] if len(fields) > index else ""
        if components is not None:
            value = comp.join(value.split(comp)[:components]).rstrip(comp)
        return value.strip()
    return ""
