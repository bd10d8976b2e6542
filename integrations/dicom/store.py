"""The local image store: each instance written durably, then indexed in the ledger.

Paths are derived from hashes of the UIDs, never the raw UIDs, so no UID can steer a
path. The C-STORE SCP, STOW-RS and file import all come through `ingest_instances`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
import struct

import pydicom
from pydicom.errors import InvalidDicomError

from integrations.db import instances as index
from integrations.db.engine import INDEX_LOCK
from integrations.db.ledger import patient_key, record_audit
from integrations.durable import fsync_file, fsync_folder, temporary_name
from integrations.errors import InvalidInput, TransientError
from integrations.settings import Settings, get_settings

log = logging.getLogger(__name__)
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class StoreFull(TransientError):
    """Free disk space is below the configured watermark: refuse (0xA700 / HTTP 507), never lose."""


class DatasetMismatch(InvalidInput):
    """The data set does not hold what its SOP Class requires (C-STORE 0xA900)."""


# Image Storage SOP Classes whose IOD makes the Image Pixel (or Multi-frame) Module mandatory
# (PS3.3 Annex A; UIDs from PS3.4 Annex B.5): an instance of one without Pixel Data is no image.
IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray (presentation)
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography (presentation)
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
})
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def valid_uid(uid: str) -> bool:
    """DICOM PS3.5 §9: digits and dots, at most 64 characters."""
    return len(uid) <= 64 and bool(UID_PATTERN.match(uid))


def _h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def relative_path(study_uid: str, series_uid: str, sop_uid: str, digest: str = "") -> Path:
    """Where an instance lives; with its content digest in the name, two different instances
    under one SOP Instance UID never overwrite each other, whatever order they commit in."""
    study = _h(study_uid)
    stem = f"{_h(sop_uid)}.{digest[:16]}" if digest else _h(sop_uid)
    return Path(study[:2]) / study / _h(series_uid) / f"{stem}.dcm"


@dataclass(frozen=True)
class StoredInstance:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    outcome: str  # stored | duplicate | conflict


def _header(data: bytes) -> pydicom.Dataset:
    """Read the header only (everything before Pixel Data) and check the pixel data's declared
    size against its actual length, without copying or decoding the pixels."""
    fp = BytesIO(data)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        pixels = _pixel_data_extent(ds, data, fp.tell())
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise InvalidInput(f"not a readable DICOM instance ({exc.__class__.__name__})") from None
    if pixels is _REPARSE:  # deflated body: offsets in `data` mean nothing, read it all
        full = _full_read(data)
        pixels = full.get("PixelData")
        check_pixel_data(full, pixels)
    else:
        check_pixel_data(ds, pixels)
    if pixels is None and str(ds.get("SOPClassUID", "")) in IMAGE_SOP_CLASSES and not _has_float_pixels(ds, data):
        # absent, or swallowed by a corrupt length earlier in the data set: never index a non-image
        raise DatasetMismatch("an image SOP class instance without Pixel Data")
    return ds


def _has_float_pixels(ds: pydicom.Dataset, data: bytes) -> bool:
    """Float/Double Float Pixel Data (also after the header-only read's stop): rare, but an image."""
    if any(k in ds for k in _PIXEL_KEYWORDS):
        return True
    return any(k in _full_read(data) for k in _PIXEL_KEYWORDS[1:])


_REPARSE = memoryview(b"")


def _full_read(data: bytes) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise InvalidInput(f"not a readable DICOM instance ({exc.__class__.__name__})") from None


def _pixel_data_extent(ds: pydicom.Dataset, data: bytes, offset: int) -> memoryview | None:
    """The value of top-level (7FE0,0010) Pixel Data as a view into `data` (None if absent),
    read from the element header at `offset` where the header-only read stopped."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and pydicom.uid.UID(syntax) == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return _REPARSE
    implicit, little = ds.original_encoding
    if implicit is None or len(data) < offset + 8:
        return None
    order = "<" if little else ">"
    group, element = struct.unpack_from(f"{order}HH", data, offset)
    if (group, element) != (0x7FE0, 0x0010):
        return None
    if implicit:
        (length,), start = struct.unpack_from(f"{order}L", data, offset + 4), offset + 8
    else:
        (length,), start = struct.unpack_from(f"{order}L", data, offset + 8), offset + 12
    view = memoryview(data)
    if length == 0xFFFFFFFF:
        return view[start:]  # encapsulated: items up to the sequence delimiter
    if start + length > len(data):
        raise InvalidInput("pixel data length runs past the end of the instance")
    return view[start : start + length]


def _int_attr(ds: pydicom.Dataset, keyword: str, default: int | None = None) -> int | None:
    raw = ds.get(keyword)
    if raw in (None, ""):
        return default
    try:
        return int(str(raw))
    except ValueError:
        raise InvalidInput(f"{keyword} is not an integer (bad VR value)") from None


def check_pixel_data(ds: pydicom.Dataset, data: bytes | memoryview | None) -> None:
    """Refuse pixel data that disagrees with Rows x Columns x Frames x Samples x Bits, or that
    declares an image larger than the configured ceiling, before anything is decoded.
    `data` is the Pixel Data value (bytes or a view of them), None when the instance has none."""
    if data is None:
        return
    rows, cols = _int_attr(ds, "Rows", 0), _int_attr(ds, "Columns", 0)
    frames = _int_attr(ds, "NumberOfFrames", 1)
    samples, bits = _int_attr(ds, "SamplesPerPixel", 1), _int_attr(ds, "BitsAllocated", 0)
    if min(rows, cols, frames, samples) < 1 or bits not in (1, 8, 16, 32, 64):
        raise InvalidInput("image attributes missing or out of range (rows, columns, frames, samples, bits)")
    expected_bits = rows * cols * frames * samples * bits
    expected = (expected_bits + 7) // 8
    if expected > get_settings().dicom_max_pixel_bytes:
        raise InvalidInput("declared image size exceeds the configured ceiling")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and pydicom.uid.UID(syntax).is_encapsulated:
        if _count_items(data) < frames + 1:  # the Basic Offset Table item, then >= 1 fragment per frame
            raise InvalidInput("encapsulated pixel data holds fewer fragments than frames")
        return
    if len(data) not in (expected, expected + 1, expected + (expected % 2)):
        raise InvalidInput("pixel data length disagrees with rows x columns x frames x samples x bits")


def _count_items(data: bytes | memoryview) -> int:
    """Items of encapsulated pixel data (PS3.5 A.4), each wholly present, up to the sequence
    delimiter; truncated or malformed data raises InvalidInput."""
    pos, count = 0, 0
    while True:
        if pos + 8 > len(data):
            raise InvalidInput("encapsulated pixel data is truncated")
        group, element, length = struct.unpack_from("<HHL", data, pos)
        if (group, element) == (0xFFFE, 0xE0DD):  # Sequence Delimitation Item
            return count
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise InvalidInput("encapsulated pixel data is malformed")
        pos += 8 + length
        if pos > len(data):
            raise InvalidInput("encapsulated pixel data is truncated")
        count += 1


def check_free_space(root: Path, incoming: int) -> None:
    """Raise StoreFull when writing `incoming` bytes would leave less than the watermark free."""
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free - incoming < get_settings().dicom_min_free_mb * 1024 * 1024:
        raise StoreFull("image store below its free-space watermark")


def _position_along_normal(ds: pydicom.Dataset) -> float | None:
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if not ipp or not iop or len(iop) != 6:
        return None
    r, c = [float(v) for v in iop[:3]], [float(v) for v in iop[3:]]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    return sum(float(p) * q for p, q in zip(ipp, n))


def ingest_instances(blobs: Iterable[bytes], actor: str = "import") -> list[StoredInstance]:
    """Store each instance durably, then commit the ledger index for all of them at once."""
    return commit_prepared([(prepare_instance(data), data) for data in blobs], actor)


@dataclass
class PreparedInstance:
    """A checked instance header, ready to be written and indexed."""

    ds: pydicom.Dataset  # header only, no pixel data
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    digest: str
    size: int

    def study_values(self) -> dict:
        keys = patient_keys(self.ds)
        return {"accession_number": str(self.ds.get("AccessionNumber", "")), "patient_key": keys[0] if keys else "",
                "patient_keys": keys}

    def series_values(self) -> dict:
        ds = self.ds
        thickness = ds.get("SliceThickness")
        return {
            "modality": str(ds.get("Modality", "")),
            "series_number": int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
            "description": str(ds.get("SeriesDescription", "")),
            "body_part": str(ds.get("BodyPartExamined", "")),
            "slice_thickness_mm": float(thickness) if thickness not in (None, "") else None,
            "orientation": "\\".join(str(float(v)) for v in ds.get("ImageOrientationPatient", []) or []),
            "image_type": "\\".join(ds.get("ImageType", []) or []),
        }

    def instance_values(self) -> dict:
        ds = self.ds
        return {"instance_number": int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None,
                "position_z_mm": _position_along_normal(ds)}


def prepare_instance(data: bytes) -> PreparedInstance:
    """Read and check one Part 10 instance (header read, pixel-size check, UIDs, digest)."""
    ds = _header(data)
    uids = [str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if not all(valid_uid(u) for u in uids):
        raise InvalidInput("a UID is missing or not digits and dots of at most 64 characters")
    return PreparedInstance(ds, *uids, str(ds.get("SOPClassUID", "")), hashlib.sha256(data).hexdigest(), len(data))


def commit_prepared(items: list[tuple[PreparedInstance, bytes]], actor: str) -> list[StoredInstance]:
    """Write each new instance durably (file fsync), then hand them to the group committer and
    return once the ledger transaction holding them has committed. Resends already in the
    ledger with the same bytes are answered from it without writing anything."""
    settings = get_settings()
    known = index.known_digests([p.sop_instance_uid for p, _ in items])
    staged = []
    for prep, data in items:
        if known.get(prep.sop_instance_uid) == prep.digest:
            staged.append(_Staged(prep, None))
            continue
        rel = relative_path(prep.study_uid, prep.series_uid, prep.sop_instance_uid, prep.digest)
        check_free_space(settings.store_dir, prep.size)
        target = settings.store_dir / rel
        new_dirs = _missing_dirs(target.parent, settings.store_dir)
        staged.append(_Staged(prep, rel, new_dirs, _write_temporary(target, data)))
    if all(s.rel is None for s in staged):
        return [StoredInstance(s.prep.study_uid, s.prep.series_uid, s.prep.sop_instance_uid, "duplicate") for s in staged]
    return GROUP_COMMITTER.commit(_Group(staged, actor))


def _missing_dirs(folder: Path, root: Path) -> tuple[Path, ...]:
    """`folder` and its parents below `root` not yet known to be durable in their parent."""
    out = []
    while folder != root and folder not in _DURABLE_DIRS:
        out.append(folder)
        folder = folder.parent
    return tuple(out)


_DURABLE_DIRS: set[Path] = set()  # folders whose own entry in their parent has been fsynced


@dataclass
class _Staged:
    prep: PreparedInstance
    rel: Path | None  # None: a resend of committed bytes, nothing written
    new_dirs: tuple[Path, ...] = ()
    tmp: Path | None = None  # written, not yet fsynced nor renamed


def _write_temporary(target: Path, data: bytes) -> Path:
    """Write next to `target` under a temporary name; the committer fsyncs and renames it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    with open(tmp, "wb") as f:
        f.write(data)
    return tmp


def _settle_files(batch: list[_Group]) -> None:
    """fsync every temporary file of the batch (in parallel: the kernel can share one journal
    commit between them), then rename each to its final name: a final name only ever holds
    complete, durable bytes."""
    pending = [s for g in batch for s in g.staged if s.tmp is not None]
    if len(pending) == 1:
        fsync_file(pending[0].tmp)
    elif pending:
        list(_FSYNC_POOL.map(fsync_file, [s.tmp for s in pending]))
    root = get_settings().store_dir
    for staged in pending:
        os.replace(staged.tmp, root / staged.rel)
        staged.tmp = None


_FSYNC_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")


@dataclass
class _Group:
    """One caller's instances; they commit together, in one transaction, or not at all."""

    staged: list[_Staged]
    actor: str
    done: bool = False
    result: list[StoredInstance] | None = None
    error: BaseException | None = None


class GroupCommitter:
    """Leader/follower group commit. Each caller queues its group and takes INDEX_LOCK; the one
    holding it commits every group queued so far (folder fsyncs, one ledger transaction, one
    commit) and marks them done. A caller returns only once its group is done, so no caller
    (and no C-STORE-RSP) ever gets success before the commit that holds its instances."""

    def __init__(self) -> None:
        self._queue: list[_Group] = []
        self._queue_lock = threading.Lock()
        self.batches = 0  # commits done (tests and the bench read these)
        self.grouped = 0  # groups committed

    def commit(self, group: _Group) -> list[StoredInstance]:
        with self._queue_lock:
            self._queue.append(group)
        with INDEX_LOCK:
            if not group.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_batch(batch)
        if group.error is not None:
            raise group.error
        return group.result

    def _commit_batch(self, batch: list[_Group]) -> None:
        try:
            results = _commit_with_retries(batch)
        except Exception as exc:  # noqa: BLE001 - isolate: one bad group must not fail the others
            if len(batch) == 1:
                batch[0].error, batch[0].done = exc, True
                return
            for group in batch:
                self._commit_batch([group])
            return
        for group, result in zip(batch, results):
            group.result, group.done = result, True
        self.batches += 1
        self.grouped += len(batch)


def _commit_with_retries(batch: list[_Group]) -> list[list[StoredInstance]]:
    """Settle the files, commit the index, then act on what the index found: a conflicting
    instance is kept aside, a surplus copy of indexed bytes removed."""
    _settle_files(batch)
    _sync_folders(batch)
    outcomes = index.commit_groups([(g.actor, [(s.prep, None if s.rel is None else str(s.rel)) for s in g.staged])
                                    for g in batch])
    root, results = get_settings().store_dir, []
    for group, group_outcomes in zip(batch, outcomes):
        out = []
        for staged, outcome in zip(group.staged, group_outcomes):
            if outcome == "conflict":
                _keep_aside(root / staged.rel)
            elif outcome == "redundant":  # same bytes already indexed under an older name
                (root / staged.rel).unlink(missing_ok=True)
            prep = staged.prep
            out.append(StoredInstance(prep.study_uid, prep.series_uid, prep.sop_instance_uid,
                                      "duplicate" if outcome == "redundant" else outcome))
        results.append(out)
    return results


def _sync_folders(batch: list[_Group]) -> None:
    """fsync each touched series folder once, and the parent of each newly created folder,
    before the commit that makes the batch visible."""
    root = get_settings().store_dir
    folders, created = set(), set()
    for group in batch:
        for staged in group.staged:
            if staged.rel is not None:
                folders.add(root / staged.rel.parent)
                created.update(staged.new_dirs)
    for folder in sorted(folders | {d.parent for d in created}, key=lambda p: len(p.parts), reverse=True):
        fsync_folder(folder)
    _DURABLE_DIRS.update(created)


GROUP_COMMITTER = GroupCommitter()


def patient_keys(ds: pydicom.Dataset) -> list[str]:
    """Pseudonymous keys for every identifier the instance carries: the NHS number from
    OtherPatientIDsSequence (issuer "NHS"), the issuer-qualified local id and the bare PatientID.
    An order's key (NHS number, else "authority:local id") matches one of them."""
    from pathways.identifiers import is_valid_nhs_number, normalise_nhs_number

    keys = []
    for item in ds.get("OtherPatientIDsSequence", []) or []:
        value = str(item.get("PatientID", ""))
        if str(item.get("IssuerOfPatientID", "")).upper() == "NHS" and is_valid_nhs_number(value):
            keys.append(patient_key(normalise_nhs_number(value)))
    local, issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
    if local and is_valid_nhs_number(local):
        keys.append(patient_key(normalise_nhs_number(local)))
    if local and issuer:
        keys.append(patient_key(f"{issuer}:{local}"))
    if local:
        keys.append(patient_key(local))
    return list(dict.fromkeys(keys))


def _keep_aside(path: Path) -> None:
    """A different instance under an already indexed SOP Instance UID: renamed *.conflict."""
    path.rename(path.with_suffix(".conflict"))
    fsync_folder(path.parent)


def series_files(series_uid: str) -> list[tuple[Path, str]]:
    """The files of a series with their SOP Instance UIDs, ordered along the slice normal."""
    root = get_settings().store_dir
    return [(root / rel, uid) for rel, uid in index.series_instances(series_uid)]


# --- Sweep: files on disk without a ledger row (a crash between file fsync and commit) ---

_TEMPORARY_NAME = re.compile(r"\.tmp\d+\.\d+$")  # `_write_temporary` / `write_durably`: <stem>.tmp<pid>.<thread>


@dataclass
class StoreSweep:
    """What one `reconcile_store` pass found and did."""

    scanned: int = 0  # final-named instance files looked at
    indexed: int = 0  # orphans committed to the ledger (stored)
    duplicates: int = 0  # orphans the ledger already held under another name (redundant copy removed)
    conflicts: int = 0  # orphans whose SOP Instance UID is indexed with other bytes (kept aside, audited)
    quarantined: int = 0  # unreadable or misnamed files moved out of the store (audited)
    young: int = 0  # too recent to judge: a live writer may be about to commit them
    temporaries_removed: int = 0  # stale temporary files (never renamed, never acknowledged)
    failed: int = 0  # commits that failed (ledger unavailable): left for the next sweep


def quarantine_dir(settings: Settings) -> Path:
    """Where the sweep moves store files it cannot index (outside the store, same file system)."""
    return settings.data_dir / "quarantine" / "dicom"


def reconcile_store(
    settings: Settings | None = None, *, grace_seconds: float = 300.0, modified_after: float | None = None, batch: int = 100
) -> StoreSweep:
    """Index instance files that reached the store without their ledger row.

    Safe while the SCP runs: files younger than `grace_seconds` are left alone (a writer renames
    a file into place only moments before its commit), and temporary names are only removed once
    stale. Orphans are re-read and checked like any received instance, then committed through the
    group committer (same outcomes: stored, duplicate, conflict); unreadable ones, or ones whose
    name does not match their content, are quarantined and audited. `modified_after` (epoch
    seconds) limits the pass to recently modified files, for frequent cheap sweeps.
    """
    settings = settings or get_settings()
    root, sweep = settings.store_dir, StoreSweep()
    if not root.is_dir():
        return sweep
    now = time.time()
    known = index.indexed_paths(None if modified_after is None else datetime.fromtimestamp(modified_after - 3600, timezone.utc))
    candidates: list[Path] = []
    for path in root.glob("*/*/*/*"):
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:  # renamed or removed by a live writer meanwhile
            continue
        if modified_after is not None and mtime < modified_after:
            continue
        if _TEMPORARY_NAME.search(path.name):
            if now - mtime >= grace_seconds:
                path.unlink(missing_ok=True)
                sweep.temporaries_removed += 1
            continue
        if path.suffix != ".dcm":
            continue  # *.conflict: already kept aside and audited
        sweep.scanned += 1
        if str(path.relative_to(root)) in known:
            continue
        if now - mtime < grace_seconds:
            sweep.young += 1
            continue
        candidates.append(path)
    for i in range(0, len(candidates), batch):
        _index_orphans(settings, candidates[i : i + batch], sweep)
    return sweep


def _index_orphans(settings: Settings, paths: list[Path], sweep: StoreSweep) -> None:
    root, staged = settings.store_dir, []
    for path in paths:
        rel = path.relative_to(root)
        try:
            prep = prepare_instance(path.read_bytes())
        except FileNotFoundError:
            continue
        except InvalidInput as exc:
            _quarantine(settings, path, str(exc))
            sweep.quarantined += 1
            continue
        uids = (prep.study_uid, prep.series_uid, prep.sop_instance_uid)
        if rel not in (relative_path(*uids, prep.digest), relative_path(*uids)):
            _quarantine(settings, path, "file name does not match its content")
            sweep.quarantined += 1
            continue
        fsync_file(path)  # fsynced before its rename already; cheap insurance after a crash
        staged.append(_Staged(prep, rel, new_dirs=_folders_below(path.parent, root)))
    if not staged:
        return
    try:
        results = GROUP_COMMITTER.commit(_Group(staged, actor="store-sweep"))
    except Exception:  # the ledger is unavailable: the files stay for the next sweep
        log.exception("store sweep could not commit %d orphaned instances", len(staged))
        sweep.failed += len(staged)
        return
    for result in results:
        if result.outcome == "stored":
            sweep.indexed += 1
        else:
            setattr(sweep, result.outcome + "s", getattr(sweep, result.outcome + "s") + 1)


def _folders_below(folder: Path, root: Path) -> tuple[Path, ...]:
    """`folder` and each parent below `root`: after a crash their entries may not be durable."""
    out = []
    while folder != root:
        out.append(folder)
        folder = folder.parent
    return tuple(out)


def _quarantine(settings: Settings, path: Path, reason: str) -> None:
    """Move a store file that cannot be indexed out of the store, and audit it (no patient data)."""
    rel = path.relative_to(settings.store_dir)
    target_dir = quarantine_dir(settings)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{'_'.join(rel.parts)}.{int(time.time())}"
    os.replace(path, target)
    fsync_folder(target_dir)
    fsync_folder(path.parent)
    record_audit("store-sweep", "instance.quarantined", "store_file", str(rel), reason=reason, moved_to=target.name)
