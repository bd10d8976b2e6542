"""The local image store: each instance written durably, then indexed in the ledger.

Paths are derived from hashes of the UIDs, never the raw UIDs, so no UID can steer a
path. The C-STORE SCP, STOW-RS and file import all come through `ingest_instances`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.ledger import audit, patient_key
from integrations.db.models import Instance, Series, Study, utcnow
from integrations.errors import InvalidInput
from integrations.settings import get_settings

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


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
    try:
        return pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"not a readable DICOM instance ({exc.__class__.__name__})") from None


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
        if not (target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
            write_durably(target if not target.exists() else target.with_suffix(f".{digest[:12]}.conflict"), data)
        staged.append((ds, rel, digest, len(data)))
    outcomes = []
    with session_scope() as session:
        for ds, rel, digest, size in staged:
            outcomes.append(_index(session, ds, rel, digest, size, actor))
    return outcomes


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
        study = Study(
            study_uid=study_uid,
            accession_number=str(ds.get("AccessionNumber", "")),
            patient_key=patient_key(str(ds.get("PatientID", ""))),
        )
        session.add(study)
        session.flush()
    study.last_received_at = now
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
