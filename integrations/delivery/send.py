"""One entry point for every destination adapter: send an outbox row's payloads."""

from __future__ import annotations

from collections.abc import Sequence

from integrations.delivery.config import DestinationConfig, FhirDestination, DicomDestination, FileDropDestination, MllpDestination, StowDestination
from integrations.delivery.filedrop import deliver_files
from integrations.settings import get_settings


def send(destination: str, config: DestinationConfig, idempotency_key: str, payloads: Sequence[str]) -> str:
    """Deliver payload files to a destination; returns a receipt line.

    Raises TransientError (retry) or PermanentError (dead-letter) from integrations.errors.
    """
    if isinstance(config, FileDropDestination):
        target = config.path or get_settings().outbox_dir / destination
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
