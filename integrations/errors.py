"""Error tree for adapters: retry what is transient, dead-letter what is permanent.

Adapters try once per delivery attempt and raise one of these carrying what the peer said
(`peer`: HTTP status and Retry-After, HL7 ACK code and text, DICOM statuses). The outbox
(integrations/db/ledger.py, `record_delivery_attempt`) decides when, or whether, to try again:
it is the only retry scheduler.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any


class RadpathError(Exception):
    """Base of radpath's own errors. Messages never carry patient identifiers.

    `peer`: what the other system answered (status codes, ACK codes, masked text), kept in the
    audit trail and the dead letter."""

    def __init__(self, message: str = "", *, peer: dict[str, Any] | None = None):
        super().__init__(message)
        self.peer: dict[str, Any] = dict(peer or {})

    def __reduce__(self):  # noqa: ANN204 - subclasses take their own arguments; keep the attributes
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, state: dict[str, Any]) -> RadpathError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class TransientError(RadpathError):
    """Worth retrying: timeouts, refused connections, busy peers.

    `retry_after`: seconds the peer asked us to wait (HTTP Retry-After), when it said so."""

    def __init__(self, message: str = "", *, retry_after: float | None = None, peer: dict[str, Any] | None = None):
        super().__init__(message, peer=peer)
        self.retry_after = retry_after


class PermanentError(RadpathError):
    """Retrying cannot help: invalid input, rejected message, missing configuration."""


class InvalidInput(PermanentError):
    """Inbound data that breaks its standard (HL7, DICOM, FHIR)."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, TimeoutError, ConnectionError))


def retry_after_of(exc: BaseException) -> float | None:
    """The wait a transient failure's peer asked for (None: it did not say)."""
    return getattr(exc, "retry_after", None) if isinstance(exc, TransientError) else None


def peer_of(exc: BaseException) -> dict[str, Any]:
    return dict(getattr(exc, "peer", None) or {})


# --- HTTP peers (FHIR, STOW-RS) ---------------------------------------------------------------

def http_is_transient(status: int) -> bool:
    """408, 425, 429 and 5xx (but 501/505, which a retry cannot change) are worth retrying."""
    return status in (408, 425, 429) or (500 <= status < 600 and status not in (501, 505))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class HttpUnavailable(TransientError):
    """An HTTP peer unreachable (status None) or answering 408/429/5xx; `retry_after` from its header."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 peer: dict[str, Any] | None = None):
        details = {"http_status": status} if status is not None else {"connection": "failed"}
        if retry_after is not None:
            details["retry_after_s"] = retry_after
        super().__init__(message, retry_after=retry_after, peer=details | dict(peer or {}))
        self.status = status


class HttpRejected(PermanentError):
    """An HTTP peer refused the request (4xx other than 408/425/429, 501, 505)."""

    def __init__(self, message: str, *, status: int, peer: dict[str, Any] | None = None):
        super().__init__(message, peer={"http_status": status} | dict(peer or {}))
        self.status = status


_DIGITS = re.compile(r"\d{6,}")


def masked(text: str, limit: int = 300) -> str:
    """A peer's free text with long digit runs (NHS numbers, MRNs an echo may carry) masked, capped."""
    return _DIGITS.sub("#", str(text))[:limit]
