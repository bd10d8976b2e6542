"""MLLP destination: send the ORU^R01 of an outbox row to a RIS and wait for its ACK.

Done only when MSA-2 equals the sent MSH-10 and MSA-1 is AA (or CA). The payload file is
the ORU rendered for this destination, so MSH-10 is the same on every retry. One try per
delivery attempt: timeouts and refused connections raise TransientError, and an ACK that is
not an accept raises `AckNotAccepted` (transient or permanent as the destination's
`on_ae` / `on_ar` say) carrying the ACK code, MSA-3 / ERR text and ERR code. The outbox
decides when to try again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from integrations.delivery.config import MllpDestination
from integrations.errors import PermanentError, TransientError
from integrations.hl7.client import AckResult, MllpClient


class AckRetry(TransientError):
    """The RIS answered AR/CR (or AE/CE where the destination retries it)."""


class AckRejected(PermanentError):
    """The RIS answered AE/CE (or AR/CR where the destination dead-letters it)."""


def _oru_payloads(payloads: Sequence[str]) -> list[Path]:
    paths = [Path(p) for p in payloads if p.endswith(".hl7")]
    if not paths:
        raise PermanentError("no HL7 payload (.hl7) to send over MLLP")
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise PermanentError(f"payload files missing: {', '.join(missing)}")
    return paths


def _send_once(config: MllpDestination, message: str) -> AckResult:
    with MllpClient(config.host, config.port, connect_timeout=config.connect_timeout_s,
                    ack_timeout=config.ack_timeout_s) as client:
        return client.send(message)


def send_oru(config: MllpDestination, payloads: Sequence[str]) -> str:
    """Deliver each HL7 payload once; returns a receipt (codes and control ids only)."""
    receipts = []
    for path in _oru_payloads(payloads):
        message = path.read_bytes().decode("utf-8")
        ack = _send_once(config, message)
        if not ack.accepted:
            raise ack_error(config, ack)
        receipts.append(f"{ack.code} {ack.control_id}")
    return f"ACK {', '.join(receipts)} from {config.host}:{config.port}"


def ack_error(config: MllpDestination, ack: AckResult) -> AckRetry | AckRejected:
    """The typed error for an ACK that is not an accept, classified by the destination's policy."""
    policy = config.on_ae if ack.code in {"AE", "CE"} else config.on_ar
    said = ack.peer
    problem = f"{config.host}:{config.port} answered {ack.code} for {ack.control_id}" + (
        f" (ERR {ack.error_code})" if ack.error_code else "") + (f": {said['text']}" if "text" in said else "")
    return AckRejected(problem, peer=said) if policy == "dead-letter" else AckRetry(problem, peer=said)
