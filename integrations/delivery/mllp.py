"""MLLP destination: send the ORU^R01 of an outbox row to a RIS and wait for its ACK.

Done only when MSA-2 equals the sent MSH-10 and MSA-1 is AA (or CA). The payload file is
the ORU rendered for this destination, so MSH-10 is the same on every retry. Timeouts,
refused connections and (by default) AR are retried here with backoff, then raised as
TransientError for the delivery task's own retries; AE is dead-lettered (PermanentError)
unless the destination says to retry it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

from integrations.delivery.config import MllpDestination
from integrations.errors import PermanentError, TransientError
from integrations.hl7.client import AckResult, MllpClient


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


def send_oru(config: MllpDestination, payloads: Sequence[str], *, sleep=time.sleep) -> str:  # noqa: ANN001
    """Deliver each HL7 payload; returns a receipt (codes and control ids only)."""
    receipts = []
    for path in _oru_payloads(payloads):
        message = path.read_bytes().decode("utf-8")
        last: Exception | None = None
        for attempt in range(config.attempts):
            if attempt:
                sleep(config.backoff_s * (2 ** (attempt - 1)) * (1 + random.random() * 0.5))
            try:
                ack = _send_once(config, message)
            except TransientError as exc:
                last = exc
                continue
            if ack.accepted:
                receipts.append(f"{ack.code} {ack.control_id}")
                last = None
                break
            policy = config.on_ae if ack.code in {"AE", "CE"} else config.on_ar
            problem = f"{config.host}:{config.port} answered {ack.code} for {ack.control_id}" + (
                f" (ERR {ack.error_code})" if ack.error_code else "")
            if policy == "dead-letter":
                raise PermanentError(problem)
            last = TransientError(problem)
        if last is not None:
            raise TransientError(f"{last} (after {config.attempts} attempts)") from last
    return f"ACK {', '.join(receipts)} from {config.host}:{config.port}"
