"""One entry point for every destination adapter: send an outbox row's payloads, once.

Adapters get their configuration injected (a file drop's folder included) and read no global
settings; each call is one try, and the outbox (integrations/db/ledger.py) schedules the next."""

from __future__ import annotations

from collections.abc import Sequence

from integrations.delivery.config import DestinationConfig, FhirDestination, DicomDestination, FileDropDestination, MllpDestination, StowDestination
from integrations.delivery.filedrop import deliver_files
from integrations.errors import PermanentError


def send(destination: str, config: DestinationConfig, idempotency_key: str, payloads: Sequence[str]) -> str:
    """Deliver payload files to a destination; returns a receipt line.

    Raises TransientError (retry) or PermanentError (dead-letter) from integrations.errors.
    """
    if isinstance(config, FileDropDestination):
        if config.path is None:
            raise PermanentError(f"file drop {destination} has no folder (Settings.destination sets it)")
        target = config.path
        target.mkdir(parents=True, exist_ok=True)
        return deliver_files(target, idempotency_key, payloads)
    elif isinstance(config, (DicomDestination, StowDestination)):
        from integrations.delivery.dicom import deliver_dicom

        return deliver_dicom(destination, config, payloads)
    elif isinstance(config, FhirDestination):
        from integrations.delivery.fhir import deliver_bundles

        return deliver_bundles(config, idempotency_key, payloads)
    elif isinstance(config, MllpDestination):
        from integrations.delivery.mllp import send_oru

        return send_oru(config, payloads)
    raise NotImplementedError(f"no adapter for destination kind {config.kind}")
