"""radpath's DICOM front door: a C-STORE, C-ECHO and MPPS SCP (pynetdicom) started by `radpath serve`.

Every instance is written durably and committed to the ledger (`ingest_instances`) before
the success status goes back. A connection from an address no allow-listed peer uses is closed
at TCP accept; the rest are checked at association against the allow-list of calling AE titles
(each with optional source addresses). Both refusals are audited. pynetdicom's
identifier and dataset logging is switched off, so no patient data reaches the logs.
"""

from __future__ import annotations

import logging
import time
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
import threading

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, Verification
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import OperationalError

from integrations.db.ledger import record_audit
from integrations.dicom import mpps
from integrations.dicom.store import DatasetMismatch, StoredInstance, StoreFull, commit_prepared, prepare_instance
from integrations.errors import InvalidInput
from integrations.settings import Settings
from integrations.tls import server_context

log = logging.getLogger(__name__)

# PS3.4 Annex B.2.3 C-STORE statuses
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
DATASET_MISMATCH = 0xA900  # Error: Data Set does not match SOP Class
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.4: Refused: SOP Class not supported

# The storage SOP classes the pathways need (PS3.4 Annex B.5), plus the SR and SEG radpath reads back.
STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
}

_NATIVE_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
]
_COMPRESSED_SYNTAXES = [
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]


def decodable_transfer_syntaxes() -> list[str]:
    """Native syntaxes plus each compressed one a pydicom decoder plugin is installed for
    (pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle or pydicom's own): a pathway reads
    pixels, so radpath never accepts what it cannot decode."""
    from pydicom.pixels import get_decoder

    out = list(_NATIVE_SYNTAXES)
    for uid in _COMPRESSED_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                out.append(uid)
        except NotImplementedError:
            continue
    return out


def quiet_pynetdicom() -> None:
    """No identifiers, datasets or PDU dumps in logs (process-wide pynetdicom switches)."""
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def peer_allowed(peers: dict[str, tuple[str, ...]], calling_ae: str, address: str) -> bool:
    """The calling AE title is listed, and the source address is one of its own (if it has any)."""
    addresses = peers.get(calling_ae.strip())
    return addresses is not None and (not addresses or address in addresses)


def address_could_be_allowed(peers: dict[str, tuple[str, ...]], address: str) -> bool:
    """Some allow-listed peer may connect from `address`: one lists it, or one lists no addresses."""
    return any(not addresses or address in addresses for addresses in peers.values())


class GatedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the source address checked at TCP accept: a connection
    no allow-listed peer could make is closed before any PDU is read (and audited), so it never
    costs an association thread. The calling AE title is still checked at A-ASSOCIATE-RQ."""

    def __init__(self, *args, peers: dict[str, tuple[str, ...]], **kwargs) -> None:  # noqa: ANN002, ANN003
        self.peers = peers
        super().__init__(*args, **kwargs)

    def verify_request(self, request, client_address) -> bool:  # noqa: ANN001 - socketserver's hook
        address = str(client_address[0])
        if address_could_be_allowed(self.peers, address):
            return True
        _audit_refused_connection(address)
        return False


def _audit_refused_connection(address: str) -> None:
    try:
        record_audit("dicom", "connection.refused", "peer_address", address, reason="no allow-listed peer connects from this address")
    except Exception:  # an audit failure must not stop the accept loop
        log.exception("could not audit a refused connection")


def status_for(exc: BaseException) -> int:
    """The C-STORE status for a failure to store (never a silent loss)."""
    if isinstance(exc, (StoreFull, OSError, OperationalError)):
        return OUT_OF_RESOURCES
    if isinstance(exc, DatasetMismatch):
        return DATASET_MISMATCH
    if isinstance(exc, InvalidInput):
        return CANNOT_UNDERSTAND
    return CANNOT_UNDERSTAND


@dataclass
class ScpHandle:
    """A running SCP; `port` is the bound port (useful when started on port 0)."""

    ae: AE
    server: object
    host: str
    port: int
    stats: dict[str, int] = field(default_factory=lambda: {"stored": 0, "duplicate": 0, "conflict": 0, "refused": 0})
    accept_thread: threading.Thread | None = None
    _stats_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, outcome: str) -> None:
        """Count one C-STORE outcome (handlers run in one thread per association)."""
        with self._stats_lock:
            self.stats[outcome] += 1

    @property
    def serving(self) -> bool:
        """The association server is running (not shut down)."""
        return self.server in self.ae._servers  # noqa: SLF001 - pynetdicom offers no public check

    def accepting(self) -> bool:
        """Serving, its accept thread alive and its socket listening: the health check of the DICOM
        door. It does not connect: a loopback connection the allow-list refuses would be audited
        as a refused peer at every check."""
        try:
            listening = self.server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:  # closed
            return False
        return self.serving and bool(listening) and (self.accept_thread is None or self.accept_thread.is_alive())

    def shutdown(self) -> None:
        """Stop accepting and close the socket (idempotent)."""
        if self.serving:
            self.server.shutdown()


def _flush_reject(assoc) -> None:  # noqa: ANN001 - pynetdicom.association.Association
    """Let the DUL thread put the A-ASSOCIATE-RJ on the wire before pynetdicom closes the socket.

    After a reject from EVT_REQUESTED, pynetdicom shuts the connection at once, while the
    PDU still sits in the DUL's queue: the peer then sees an abort instead of the reject.
    """
    deadline = time.monotonic() + 2.0
    while not assoc.dul.to_provider_queue.empty() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.02)  # the dequeued PDU is written by the same DUL pass


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: switch Nagle off (a C-STORE-RSP otherwise waits ~40 ms for an ACK)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _audit_reject(calling_ae: str, address: str, reason: str) -> None:
    try:
        record_audit("dicom", "association.rejected", "peer", calling_ae.strip() or "-", address=address, reason=reason)
    except Exception:  # an audit failure must not keep a rejected peer connected
        log.exception("could not audit a rejected association")


def start_scp(
    settings: Settings,
    on_instance_committed: Callable[[StoredInstance], None] | None = None,
    wake_readiness: Callable[[], None] | None = None,
) -> ScpHandle:
    """Start the C-STORE/C-ECHO/MPPS SCP in background threads on settings.bind_host:dicom_port.

    `wake_readiness` is called after a modality's MPPS N-SET COMPLETED or DISCONTINUED commits
    and when an association that stored images is released: serve then sweeps readiness at
    once rather than at its next tick."""
    quiet_pynetdicom()
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.maximum_associations = settings.dicom_max_associations
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.dicom_timeout_seconds
    ae.maximum_pdu_size = 0  # unlimited: fewer, larger P-DATA PDUs
    syntaxes = decodable_transfer_syntaxes()
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(Verification)
    ae.add_supported_context(ModalityPerformedProcedureStep)
    handle: ScpHandle | None = None
    peers = dict(settings.dicom_peers)

    def on_requested(event: evt.Event) -> None:
        calling = event.assoc.requestor.primitive.calling_ae_title
        called = event.assoc.requestor.primitive.called_ae_title.strip()
        address = event.assoc.requestor.address
        # PS3.8 Table 9-21: result 1 rejected-permanent, source 1 DICOM UL service-user,
        # reason 3 calling AE title not recognised / reason 7 called AE title not recognised.
        if not peer_allowed(peers, calling, address):
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            _flush_reject(event.assoc)
            _audit_reject(calling, address, "calling AE title or source address not allowed")
        elif settings.dicom_require_called_ae and called != settings.dicom_ae_title:
            # A modality set up for another node must not have its images filed here unseen.
            event.assoc.acse.send_reject(0x01, 0x01, 0x07)
            _flush_reject(event.assoc)
            _audit_reject(calling, address, f"called AE title {called!r} is not this node's ({settings.dicom_ae_title!r})")

    def on_store(event: evt.Event) -> int:
        calling = event.assoc.requestor.ae_title.strip()
        try:
            data = event.encoded_dataset(include_meta=True)
            prepared = prepare_instance(data)
            if prepared.sop_class_uid != str(event.request.AffectedSOPClassUID) or prepared.sop_instance_uid != str(
                event.request.AffectedSOPInstanceUID
            ):
                handle.count("refused")
                return DATASET_MISMATCH
            # Concurrent associations meet in the group committer: one fsync pass and one
            # ledger commit for all of them; each returns only after the commit holding it.
            (outcome,) = commit_prepared([(prepared, data)], actor=f"dicom:{calling}")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status; the node keeps serving
            handle.count("refused")
            if not isinstance(exc, (InvalidInput, StoreFull)):
                log.warning("C-STORE failed: %s", exc.__class__.__name__)
            return status_for(exc)
        handle.count(outcome.outcome)
        if on_instance_committed is not None:
            try:
                on_instance_committed(outcome)
            except Exception:  # the instance is committed; a callback failure must not undo the ack
                log.exception("on_instance_committed failed")
        return SUCCESS

    def on_echo(event: evt.Event) -> int:
        return SUCCESS

    def on_released(event: evt.Event) -> None:
        if wake_readiness is not None and event.assoc.accepted_contexts and any(
                cx.abstract_syntax in STORAGE_SOP_CLASSES for cx in event.assoc.accepted_contexts):
            try:
                wake_readiness()
            except Exception:  # waking the sweep early is only a shortcut
                log.exception("wake_readiness failed")

    handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_REQUESTED, on_requested), (evt.EVT_C_STORE, on_store), (evt.EVT_C_ECHO, on_echo),
                (evt.EVT_RELEASED, on_released), *mpps.handlers(wake_readiness)]
    server = ae.make_server(
        (settings.bind_host, settings.dicom_port), evt_handlers=handlers, server_class=GatedAssociationServer, peers=peers,
        ssl_context=server_context(settings),  # DICOM TLS (PS3.15 Annex B.1) when configured
    )
    # What AE.start_server(block=False) does, with our server class: serve in a daemon thread,
    # and register with the AE (AssociationServer.shutdown removes itself from ae._servers).
    accept = threading.Thread(target=server.serve_forever, name="dicom-scp-accept", daemon=True)
    accept.start()
    ae._servers.append(server)  # noqa: SLF001 - guarded by tests/test_dicom_accept.py
    host, port = server.server_address[:2]
    handle = ScpHandle(ae=ae, server=server, host=host, port=port, accept_thread=accept)
    log.info("DICOM SCP %s listening on %s:%d", settings.dicom_ae_title, host, port)
    return handle
