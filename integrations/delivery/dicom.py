"""Deliver SR and SEG results to a PACS by C-STORE (SCU) or STOW-RS, per destination.

The objects' SOP Instance UIDs are deterministic per result (integrations/uids.py), so a
retry re-sends the same instances and the PACS still holds one of each. Outcomes map onto the
error tree, one try per delivery attempt: warnings (0xBxxx) succeed and are logged; 0xA7xx,
0x0110, association rejects and aborts, refused connections, timeouts and HTTP 5xx/408/429
are TransientError (the outbox retries, honouring Retry-After); 0xA9xx/0xCxxx, other
refusals and HTTP 4xx are PermanentError (dead-letter with an alert). Each error carries the
DICOM statuses or the HTTP status the PACS gave.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

from integrations.delivery.config import DicomDestination, StowDestination
from integrations.dicom.scu import StoreResult, raise_for_results, store_files
from integrations.errors import HttpRejected, HttpUnavailable, PermanentError, http_is_transient, retry_after_seconds

log = logging.getLogger(__name__)


def _dicom_payloads(payloads: Sequence[str]) -> list[Path]:
    files = [Path(p) for p in payloads if Path(p).suffix.lower() == ".dcm"]
    missing = [p.name for p in files if not p.exists()]
    if missing:
        raise PermanentError(f"payload files missing: {', '.join(missing)}")
    if not files:
        raise PermanentError("no DICOM payload (SR/SEG) to deliver")
    return files


def deliver_dicom(destination: str, config: DicomDestination | StowDestination, payloads: Sequence[str]) -> str:
    """Send the SR/SEG payload files; returns a receipt line or raises Transient/PermanentError."""
    files = _dicom_payloads(payloads)
    if isinstance(config, DicomDestination):
        results = store_files(
            files, config.host, config.port, called_ae=config.called_ae_title, calling_ae=config.calling_ae_title, timeout=config.timeout_seconds
        )
        return f"C-STORE to {config.called_ae_title}: " + raise_for_results(results, destination)
    return "STOW-RS: " + stow(files, config, destination)


def multipart_body(files: Sequence[Path]) -> tuple[bytes, str]:
    """A multipart/related; type="application/dicom" body and its Content-Type header."""
    boundary = f"radpath-{uuid.uuid4().hex}"
    out = bytearray()
    for path in files:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += path.read_bytes()
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _failure_reasons(body: bytes) -> list[int]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return []
    items = (doc.get("00081198") or {}).get("Value") or [] if isinstance(doc, dict) else []
    reasons = []
    for item in items:
        value = (item.get("00081197") or {}).get("Value") or [None]
        reasons.append(value[0])
    return reasons


def stow(files: Sequence[Path], config: StowDestination, destination: str, transport: httpx.BaseTransport | None = None) -> str:
    """POST the files to <base_url>/studies and classify the answer."""
    body, content_type = multipart_body(files)
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    if config.auth == "bearer":
        if not config.bearer_token:
            raise PermanentError(f"{destination}: bearer auth configured without a token")
        headers["Authorization"] = f"Bearer {config.bearer_token}"
    try:
        with httpx.Client(timeout=config.timeout_seconds, transport=transport) as client:
            response = client.post(config.base_url.rstrip("/") + "/studies", content=body, headers=headers)
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise HttpUnavailable(f"{destination}: STOW-RS not reachable ({exc.__class__.__name__})",
                              peer={"connection": exc.__class__.__name__}) from None
    reasons = _failure_reasons(response.content)
    status = response.status_code
    if http_is_transient(status) or status == 507:
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        raise HttpUnavailable(f"{destination}: STOW-RS answered HTTP {status}", status=status, retry_after=wait)
    if reasons:
        results = [StoreResult("", r if isinstance(r, int) else 0xC000) for r in reasons]
        raise_for_results(results, destination)  # raises: a failure reason is never success
    if status >= 400:
        raise HttpRejected(f"{destination}: STOW-RS answered HTTP {status}", status=status)
    if status == 202:
        log.warning("%s: STOW-RS stored with warnings (HTTP 202)", destination)
    return f"{len(files)} instance(s) stored (HTTP {status})"
