"""The local image store: each instance written durably, then indexed in the ledger.

Paths are derived from hashes of the UIDs, never the raw UIDs, so no UID can steer a
path. The C-STORE SCP, STOW-RS and file import all come through `ingest_instances`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from struct import error as struct_error

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.ledger import audit, patient_key
from integrations.db.models import Instance, Series, Study, utcnow
from integrations.errors import InvalidInput, TransientError
from integrations.settings import get_settings

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
INDEX_LOCK = threading.Lock()  # one ledger writer per process: SQLite serialises writers anyway


class StoreFull(TransientError):
    """Free disk space is below the configured watermark: refuse (0xA700 / HTTP 507), never lose."""


def valid_uid(uid: str) -> bool:
    """DICOM PS3.5 §9: digits and dots, at most 64 characters."""
    return len(uid) <= 64 and bool(UID_PATTERN.match(uid))


def _h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def relative_path(study_uid: str, series_uid: str, sop_uid: str) -> Path:
    study = _h(study_uid)
    return Path(study[:2]) / study / _h(series_uid) / f"{_h(sop_uid)}.dcm"


def write_durably(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename, fsync the folder: all or nothing on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class StoredInstance:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    outcome: str  # stored | duplicate | conflict


def _header(data: bytes) -> pydicom.Dataset:
    """Parse a Part 10 instance (pixel data kept as encoded bytes, never decoded) and check it."""
    try:
        ds = pydicom.dcmread(BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise InvalidInput(f"not a readable DICOM instance ({exc.__class__.__name__})") from None
    check_pixel_data(ds)
    return ds


def _int_attr(ds: pydicom.Dataset, keyword: str, default: int | None = None) -> int | None:
    raw = ds.get(keyword)
    if raw in (None, ""):
        return default
    try:
        return int(str(raw))
    except ValueError:
        raise InvalidInput(f"{keyword} is not an integer (bad VR value)") from None


def check_pixel_data(ds: pydicom.Dataset) -> None:
    """Refuse pixel data that disagrees with Rows x Columns x Frames x Samples x Bits, or that
    declares an image larger than the configured ceiling, before anything is decoded."""
    if "PixelData" not in ds:
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
    data = ds.PixelData
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and pydicom.uid.UID(syntax).is_encapsulated:
        from pydicom.encaps import generate_fragments

        try:
            fragments = sum(1 for _ in generate_fragments(data))
        except (ValueError, EOFError, struct_error) as exc:
            raise InvalidInput(f"encapsulated pixel data is malformed ({exc.__class__.__name__})") from None
        if fragments < frames:
            raise InvalidInput("encapsulated pixel data holds fewer fragments than frames")
        return
    if len(data) not in (expected, expected + 1, expected + (expected % 2)):
        raise InvalidInput("pixel data length disagrees with rows x columns x frames x samples x bits")


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
    settings = get_settings()
    staged: list[tuple[pydicom.Dataset, Path, str, int]] = []
    for data in blobs:
        ds = _header(data)
        uids = [str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        if not all(valid_uid(u) for u in uids):
            raise InvalidInput("a UID is missing or not digits and dots of at most 64 characters")
        rel = relative_path(*uids)
        digest = hashlib.sha256(data).hexdigest()
        target = settings.store_dir / rel
        check_free_space(settings.store_dir, len(data))
        if not (target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
            write_durably(target if not target.exists() else target.with_suffix(f".{digest[:12]}.conflict"), data)
        staged.append((ds, rel, digest, len(data)))
    for attempt in range(3):  # another process may create the same study or series first
        try:
            with INDEX_LOCK, session_scope() as session:
                return [_index(session, ds, rel, digest, size, actor) for ds, rel, digest, size in staged]
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


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


def _index(session, ds: pydicom.Dataset, rel: Path, digest: str, size: int, actor: str) -> StoredInstance:  # noqa: ANN001
    study_uid, series_uid, sop_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    existing = session.exec(select(Instance).where(Instance.sop_instance_uid == sop_uid)).first()
    if existing is not None:
        if existing.sha256 == digest:
            return StoredInstance(study_uid, series_uid, sop_uid, "duplicate")
        audit(session, actor, "instance.conflict", "instance", existing.id, sha256=digest[:16])
        return StoredInstance(study_uid, series_uid, sop_uid, "conflict")
    now = utcnow()
    study = session.exec(select(Study).where(Study.study_uid == study_uid)).first()
    if study is None:
        keys = patient_keys(ds)
        study = Study(
            study_uid=study_uid,
            accession_number=str(ds.get("AccessionNumber", "")),
            patient_key=keys[0] if keys else "",
            patient_keys=keys,
        )
        session.add(study)
        session.flush()
    study.last_received_at = now
    if study.status == "ready":  # images after the study was handed to runs: readiness decides
        study.late_instances += 1
    series = session.exec(select(Series).where(Series.series_uid == series_uid)).first()
    if series is None:
        thickness = ds.get("SliceThickness")
        series = Series(
            study_id=study.id,
            series_uid=series_uid,
            modality=str(ds.get("Modality", "")),
            series_number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
            description=str(ds.get("SeriesDescription", "")),
            body_part=str(ds.get("BodyPartExamined", "")),
            slice_thickness_mm=float(thickness) if thickness not in (None, "") else None,
            orientation="\\".join(str(float(v)) for v in ds.get("ImageOrientationPatient", []) or []),
            image_type="\\".join(ds.get("ImageType", []) or []),
        )
        session.add(series)
        session.flush()
    series.n_instances += 1
    session.add(
        Instance(
            series_id=series.id,
            sop_instance_uid=sop_uid,
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            instance_number=int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None,
            position_z_mm=_position_along_normal(ds),
            path=str(rel),
            sha256=digest,
            size_bytes=size,
            received_at=now,
        )
    )
    return StoredInstance(study_uid, series_uid, sop_uid, "stored")


def series_files(series_uid: str) -> list[tuple[Path, str]]:
    """The files of a series with their SOP Instance UIDs, ordered along the slice normal."""
    root = get_settings().store_dir
    with session_scope() as session:
        series = session.exec(select(Series).where(Series.series_uid == series_uid)).one()
        rows = session.exec(select(Instance).where(Instance.series_id == series.id)).all()
    rows = sorted(rows, key=lambda r: (r.position_z_mm if r.position_z_mm is not None else 0.0, r.instance_number or 0))
    return [(root / r.path, r.sop_instance_uid) for r in rows]
