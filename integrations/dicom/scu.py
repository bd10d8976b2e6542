"""C-STORE / C-ECHO SCU: send files to a DICOM node, and classify what the node answered.

Files go as encoded (never decoded and re-encoded), each in a presentation context for its own
SOP class and transfer syntax. Status classes follow PS3.4 Annex B.2.3 and PS3.7 Annex C:
0x0000 success; 0xB000/0xB006/0xB007 warnings (stored: success, logged); 0xA7xx out of
resources, 0x0110 processing failure and 0x0213 resource limitation (transient); 0xA9xx and
0xCxxx errors (permanent); anything else permanent. One try per call: failures raise
`StoreFailedNow` / `StoreRefused` carrying every failed status; the outbox schedules retries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import AE, evt

from integrations.dicom.scp import quiet_pynetdicom, set_nodelay
from integrations.errors import PermanentError, TransientError

log = logging.getLogger(__name__)
TRANSIENT_STATUSES = frozenset({0x0110, 0x0213})  # processing failure, resource limitation (PS3.7 C)
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: at most 128 presentation contexts per association


class StoreFailedNow(TransientError):
    """The node could not store now (out of resources, processing failure, no response)."""


class StoreRefused(PermanentError):
    """The node refused instances (0xA9xx data set mismatch, 0xCxxx cannot understand, ...)."""


@dataclass(frozen=True)
class StoreResult:
    sop_instance_uid: str
    status: int | None  # None: no response (timeout, abort)

    @property
    def category(self) -> str:
        return status_category(self.status)


def status_category(status: int | None) -> str:
    """'success' | 'warning' | 'transient' | 'permanent' for a C-STORE status."""
    if status is None:
        return "transient"
    if status == 0x0000:
        return "success"
    if status in (0xB000, 0xB006, 0xB007) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    if 0xA700 <= status <= 0xA7FF or status in TRANSIENT_STATUSES:
        return "transient"
    return "permanent"


def _contexts(paths: Sequence[Path]) -> list[tuple[str, str]]:
    pairs = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        pairs.append((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    unique = list(dict.fromkeys(pairs))
    if len(unique) > MAX_CONTEXTS:
        raise PermanentError("more SOP class / transfer syntax pairs than one association allows")
    return unique


def _associate(host: str, port: int, called_ae: str, calling_ae: str, timeout: float, contexts: Iterable[tuple[str, str]]):  # noqa: ANN202
    quiet_pynetdicom()
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(host, port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    if assoc.is_rejected:
        raise TransientError(f"association rejected by {called_ae} at {host}:{port}")
    if not assoc.accepted_contexts and assoc.rejected_contexts:
        raise PermanentError(f"{called_ae} accepts none of the proposed SOP class / transfer syntax pairs")
    if assoc.is_aborted or not assoc.is_established:
        raise TransientError(f"no association with {called_ae} at {host}:{port} (refused, aborted or timed out)")
    return assoc


def store_files(
    paths: Sequence[Path | str], host: str, port: int, *, called_ae: str, calling_ae: str = "RADPATH", timeout: float = 30.0
) -> list[StoreResult]:
    """C-STORE each file over one association; returns every instance's status.

    Raises TransientError when no association could be made (refused, rejected, aborted)."""
    files = [Path(p) for p in paths]
    if not files:
        return []
    assoc = _associate(host, port, called_ae, calling_ae, timeout, _contexts(files))
    results: list[StoreResult] = []
    try:
        for path in files:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
            try:
                rsp = assoc.send_c_store(path)
            except (ValueError, AttributeError, RuntimeError) as exc:  # no accepted context, or the association died
                log.warning("C-STORE not sent: %s", exc.__class__.__name__)
                results.append(StoreResult(uid, None if not assoc.is_established else 0x0122))
                continue
            results.append(StoreResult(uid, int(rsp.Status) if "Status" in rsp else None))
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def echo(host: str, port: int, *, called_ae: str, calling_ae: str = "RADPATH", timeout: float = 10.0) -> int | None:
    """C-ECHO: the status (0x0000 when the node answers), None when it does not."""
    from pynetdicom.sop_class import Verification

    try:
        assoc = _associate(host, port, called_ae, calling_ae, timeout, [(Verification, "1.2.840.10008.1.2")])
    except TransientError:
        return None
    try:
        rsp = assoc.send_c_echo()
        return int(rsp.Status) if "Status" in rsp else None
    finally:
        if assoc.is_established:
            assoc.release()


def raise_for_results(results: Sequence[StoreResult], destination: str) -> str:
    """Success/warnings → a receipt line; any transient status → TransientError; else PermanentError."""
    warnings = [r for r in results if r.category == "warning"]
    for r in warnings:
        log.warning("%s stored an instance with warning status 0x%04X", destination, r.status)
    transient = [r for r in results if r.category == "transient"]
    permanent = [r for r in results if r.category == "permanent"]
    statuses = {"dicom_status": ["no response" if r.status is None else f"0x{r.status:04X}"
                                 for r in permanent + transient]}
    if permanent:
        codes = ", ".join(f"0x{r.status:04X}" for r in permanent)
        raise StoreRefused(f"{destination} refused {len(permanent)} instance(s): {codes}", peer=statuses)
    if transient:
        codes = ", ".join("no response" if r.status is None else f"0x{r.status:04X}" for r in transient)
        raise StoreFailedNow(f"{destination} could not store {len(transient)} instance(s) now: {codes}", peer=statuses)
    return f"{len(results)} instance(s) stored" + (f", {len(warnings)} with warnings" if warnings else "")


@dataclass(frozen=True)
class PushReport:
    sent: int
    ok: int
    failed: int
    seconds: float
    megabytes: float


def push_folder(
    folder: Path | str, host: str, port: int, *, called_ae: str = "RADPATH", calling_ae: str = "RADPATH_DEMO", timeout: float = 30.0
) -> PushReport:
    """C-STORE every DICOM file under `folder` (for the demo and benchmarks)."""
    import time

    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    start = time.perf_counter()
    results = []
    for chunk_start in range(0, len(files), 512):
        results += store_files(files[chunk_start : chunk_start + 512], host, port, called_ae=called_ae, calling_ae=calling_ae, timeout=timeout)
    ok = sum(r.category in ("success", "warning") for r in results)
    size = sum(p.stat().st_size for p in files) / 1e6
    return PushReport(sent=len(results), ok=ok, failed=len(results) - ok, seconds=time.perf_counter() - start, megabytes=size)
