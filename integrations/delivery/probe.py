"""Test the connection to a destination with its own configuration (`radpath deliveries test`).

One harmless exchange per kind, nothing stored at the peer:
- DICOM (C-STORE PACS): C-ECHO, the Verification SOP class (PS3.4 Annex A), status 0x0000.
- STOW-RS / FHIR: an HTTP GET of the capability statement (FHIR R4 `GET [base]/metadata`,
  the `capabilities` interaction; for DICOMweb the root answering at all).
- MLLP (RIS): an NMQ^N01 network-management query (HL7 v2 chapter 14, "application control"),
  the message type HL7 defines for checking a link. Any HL7 answer to its control id proves
  the MLLP round trip: an AA/NMR, or an AR/AE saying the RIS does not handle NMQ, both count
  as reachable (the answer's code is printed). ORM/ORU-shaped tests would reach clinical queues.
- File drop: the folder exists or can be made, and is writable.

The periodic health check of `radpath serve` (`periodic=True`) makes the same checks, except
that it only opens and closes a TCP connection to an MLLP RIS: an NMQ every half minute would
fill a RIS's interface log, and not every RIS answers NMQ.
Every failure is one line naming the peer (host:port or URL) and what it said, masked.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import uuid
from dataclasses import dataclass

from integrations.delivery.config import (
    DestinationConfig,
    DicomDestination,
    FhirDestination,
    FileDropDestination,
    MllpDestination,
    StowDestination,
)
from integrations.errors import masked


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str  # scrubbed: addresses, codes and statuses, no identifiers


def nmq_message(config: MllpDestination, control_id: str, now: dt.datetime) -> str:
    """A network-management query (NMQ^N01) carrying only radpath's own identity (pure)."""
    stamp = now.strftime("%Y%m%d%H%M%S")
    return "\r".join([
        (f"MSH|^~\\&|RADPATH||{config.receiving_application}|{config.receiving_facility}|{stamp}||NMQ^N01"
         f"|{control_id}|P|{config.hl7_version}"),
        f"QRD|{stamp}|R|I|{control_id}|||1^RD|radpath|link-test",
        "NCK|" + stamp,
    ]) + "\r"


def check_destination(config: DestinationConfig, *, periodic: bool = False) -> Probe:
    try:
        if isinstance(config, DicomDestination):
            return _echo(config)
        if isinstance(config, MllpDestination):
            return _tcp(config) if periodic else _mllp(config)
        if isinstance(config, FhirDestination):
            return _fhir(config)
        if isinstance(config, StowDestination):
            return _stow(config)
        if isinstance(config, FileDropDestination):
            return _folder(config)
    except Exception as exc:  # noqa: BLE001 - the probe reports, it never raises
        return Probe(False, masked(f"{where(config)}: {exc.__class__.__name__}: {exc}"))
    return Probe(False, f"no connection test for kind {config.kind}")


def where(config: DestinationConfig) -> str:
    """The peer as ops know it: protocol and address (no credentials)."""
    if isinstance(config, DicomDestination):
        return f"DICOM {config.called_ae_title}@{config.host}:{config.port}"
    if isinstance(config, MllpDestination):
        return f"MLLP {config.host}:{config.port}"
    if isinstance(config, (FhirDestination, StowDestination)):
        return f"{config.kind.upper()} {config.base_url}"
    return f"folder {getattr(config, 'path', '')}"


def _echo(config: DicomDestination) -> Probe:
    from integrations.dicom.scu import echo

    where = f"{config.called_ae_title}@{config.host}:{config.port}"
    status = echo(config.host, config.port, called_ae=config.called_ae_title, calling_ae=config.calling_ae_title,
                  timeout=min(config.timeout_seconds, 10.0))
    if status == 0:
        return Probe(True, f"C-ECHO {where}: status 0x0000")
    return Probe(False, f"C-ECHO {where}: " + ("no association (refused, rejected or no answer)" if status is None
                                               else f"status 0x{status:04X}"))


def _mllp(config: MllpDestination) -> Probe:
    from integrations.hl7.client import MllpClient

    control_id = f"RPTEST{uuid.uuid4().hex[:12].upper()}"
    where = f"{config.host}:{config.port}"
    with MllpClient(config.host, config.port, connect_timeout=config.connect_timeout_s,
                    ack_timeout=min(config.ack_timeout_s, 10.0)) as client:
        ack = client.send(nmq_message(config, control_id, dt.datetime.now(dt.UTC)))
    said = f" ({masked(ack.text, 120)})" if ack.text else ""
    return Probe(True, f"MLLP {where}: answered {ack.code} to NMQ^N01 {control_id}{said}")


def _tcp(config: MllpDestination) -> Probe:
    import socket

    with socket.create_connection((config.host, config.port), timeout=config.connect_timeout_s):
        pass
    return Probe(True, f"MLLP {config.host}:{config.port}: accepting connections")


def _fhir(config: FhirDestination) -> Probe:
    from integrations.delivery.fhir import client_for

    with client_for(config) as client:
        response = client.request("GET", "metadata", headers={"Accept": "application/fhir+json"})
    body = response.json() if response.content else {}
    kind = body.get("resourceType", "?") if isinstance(body, dict) else "?"
    version = body.get("fhirVersion", "") if isinstance(body, dict) else ""
    if kind != "CapabilityStatement":
        return Probe(False, f"GET {config.base_url}/metadata: HTTP {response.status_code} but {kind}, "
                            "not a CapabilityStatement")
    return Probe(True, f"GET {config.base_url}/metadata: HTTP {response.status_code} CapabilityStatement {version}".rstrip())


def _stow(config: StowDestination) -> Probe:
    import httpx

    headers = {"Authorization": f"Bearer {config.bearer_token}"} if config.auth == "bearer" and config.bearer_token else {}
    with httpx.Client(timeout=min(config.timeout_seconds, 10.0)) as client:
        response = client.get(config.base_url.rstrip("/") + "/studies", params={"limit": "1"}, headers=headers)
    ok = response.status_code < 500 and response.status_code not in (401, 403)
    return Probe(ok, f"GET {config.base_url}/studies: HTTP {response.status_code}")


def _folder(config: FileDropDestination) -> Probe:
    if config.path is None:
        return Probe(False, "file drop without a folder")
    config.path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=config.path, prefix=".radpath-test-"):
        pass
    return Probe(os.access(config.path, os.W_OK), f"folder {config.path} writable")
