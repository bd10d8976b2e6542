"""HL7 v2 acknowledgements (ACK) in original and enhanced mode, with ERR segments.

Original mode (HL7 v2.5.1 section 2.9.2): one ACK, MSA-1 AA | AE | AR.
Enhanced mode (section 2.9.3), chosen by the sender through MSH-15/MSH-16: an accept
(commit) acknowledgement CA | CE | CR once the message is safely stored, then an
application acknowledgement AA | AE | AR, each only when the sender's condition (HL7
table 0155: AL always, NE never, ER on error, SU on success) asks for it.

ERR: before v2.5, ERR-1 (ELD: segment^sequence^field^code&text&HL70357); from v2.5,
ERR-2 (ERL: segment^sequence^field), ERR-3 (code^text^HL70357), ERR-4 severity "E" and
ERR-8 a short user message. Codes come from HL7 table 0357 (message error condition codes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from integrations.hl7.oru import escape

# HL7 table 0357 — message error condition codes
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_INTERNAL_ERROR = "207"
ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "207": "Application internal error",
}
# HL7 table 0155 — accept/application acknowledgment conditions
ALWAYS, NEVER, ON_ERROR, ON_SUCCESS = "AL", "NE", "ER", "SU"


@dataclass(frozen=True)
class ErrorDetail:
    """Where a message broke (segment, its sequence, field number) and why (table 0357)."""

    segment: str
    field: int | None
    code: str
    text: str
    sequence: int = 1

    @property
    def location(self) -> str:
        return f"{self.segment}-{self.field}" if self.field else self.segment


@dataclass(frozen=True)
class Header:
    """What an ACK needs to know about the message it answers (from its MSH)."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    trigger: str = ""
    processing_id: str = "P"
    version: str = "2.4"
    accept_ack_type: str = ""  # MSH-15
    application_ack_type: str = ""  # MSH-16

    @property
    def enhanced(self) -> bool:
        return bool(self.accept_ack_type or self.application_ack_type)


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (2, 4)


def _err_segment(error: ErrorDetail, version: str) -> str:
    code = f"{error.code}^{escape(ERROR_TEXT.get(error.code, ''))}^HL70357"
    where = f"{error.segment}^{error.sequence}^{error.field or ''}"
    text = escape(error.text)[:250]
    if _version_tuple(version) < (2, 5):
        return f"ERR|{where}^{code.replace('^', '&')}"
    return f"ERR||{where}|{code}|E||||{text}"


def ack_control_id(header: Header, kind: str) -> str:
    """Deterministic MSH-10 for our answer to one message (kind "A" application, "C" accept)."""
    digest = hashlib.sha256(
        f"{header.sending_application}|{header.sending_facility}|{header.control_id}|{kind}".encode()
    ).hexdigest()
    return f"{kind}{digest[:19].upper()}"


def build_ack(
    header: Header,
    code: str,
    *,
    error: ErrorDetail | None = None,
    application: str = "RADPATH",
    facility: str = "",
    now: dt.datetime | None = None,
) -> str:
    """One ACK message (ER7, \\r separated) with MSA-1 = code and MSA-2 = the sender's MSH-10."""
    known = re.fullmatch(r"2\.[3-9](\.\d)?", header.version) is not None
    version = header.version if known else "2.4"
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")
    msg_type = f"ACK^{escape(header.trigger)}" + ("^ACK" if _version_tuple(version) >= (2, 3, 1) else "")
    kind = "C" if code in {"CA", "CE", "CR"} else "A"
    processing = header.processing_id if header.processing_id in {"P", "T", "D"} else "P"
    segments = [
        "|".join(["MSH", "^~\\&", escape(application), escape(facility), escape(header.sending_application),
                  escape(header.sending_facility), stamp, "", msg_type, ack_control_id(header, kind),
                  processing, escape(version)]),
        f"MSA|{code}|{escape(header.control_id)}" + (f"|{escape(error.text)[:80]}" if error else ""),
    ]
    if error is not None:
        segments.append(_err_segment(error, version))
    return "\r".join(segments) + "\r"


def _wanted(condition: str, ok: bool, default: bool) -> bool:
    if condition == ALWAYS:
        return True
    if condition == NEVER:
        return False
    if condition == ON_ERROR:
        return not ok
    if condition == ON_SUCCESS:
        return ok
    return default


def acknowledgements(
    header: Header,
    outcome: str,
    *,
    error: ErrorDetail | None = None,
    stored: bool = True,
    application: str = "RADPATH",
    facility: str = "",
) -> list[str]:
    """The ACKs owed for one message.

    outcome: "AA" | "AE" | "AR" (the application's answer). stored: the message is
    committed to the ledger (enhanced mode answers CA only then).
    """
    kwargs = dict(error=error, application=application, facility=facility)
    if not header.enhanced:
        return [build_ack(header, outcome, **kwargs)]
    acks = []
    if stored:
        commit_code = "CA"
    else:
        commit_code = "CR" if outcome == "AR" else "CE"
    if _wanted(header.accept_ack_type, commit_code == "CA", default=True):
        acks.append(build_ack(header, commit_code, **(kwargs if commit_code != "CA" else {**kwargs, "error": None})))
    if stored and _wanted(header.application_ack_type, outcome == "AA", default=True):
        acks.append(build_ack(header, outcome, **kwargs))
    return acks
