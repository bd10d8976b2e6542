"""Load a stored series into a 3D volume once, and keep it on local disk by reference."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pydicom

from integrations.dicom.store import series_files
from integrations.errors import InvalidInput
from integrations.settings import get_settings
from pathways.disclosure import burned_in_value
from pathways.findings import VolumeRef


class NotARegularVolume(InvalidInput):
    """The series is not a regular volume; `reason` is a short name shown to people and audited."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_geometry(headers: list[pydicom.Dataset], tolerance_mm: float = 0.01) -> float:
    """Return the slice spacing of a regular volume, or raise NotARegularVolume with a named reason.

    Checks what highdicom's ``get_volume_from_series`` checks (highdicom/volume.py and
    highdicom.spatial.get_series_volume_positions): one orientation, one size and pixel
    spacing, slice positions along the normal of the image plane (no gantry tilt), no
    duplicate positions and one spacing throughout (a missing slice is a double gap).
    Never averages spacing over gaps. `headers` must be in volume order.
    """
    if len({tuple(round(float(v), 4) for v in h.ImageOrientationPatient) for h in headers}) > 1:
        raise NotARegularVolume("mixed-orientation", "slices differ in ImageOrientationPatient")
    if len({(int(h.Rows), int(h.Columns), tuple(round(float(v), 4) for v in h.PixelSpacing)) for h in headers}) > 1:
        raise NotARegularVolume("mixed-size", "slices differ in rows, columns or pixel spacing")
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([h.ImagePositionPatient for h in headers], dtype=float)
    steps = np.diff(positions, axis=0)
    dist = steps @ normal
    if np.any(np.abs(dist) < tolerance_mm):
        raise NotARegularVolume("duplicate-slice", "two slices share one position")
    off_normal = np.linalg.norm(steps - np.outer(dist, normal), axis=1)
    if np.any(off_normal > tolerance_mm):
        raise NotARegularVolume("gantry-tilt", "slice positions do not follow the image normal")
    spacing = float(np.median(np.abs(dist)))
    if np.any(np.abs(np.abs(dist) - spacing) > tolerance_mm):
        gaps = np.abs(dist) / spacing
        if np.any(np.abs(gaps - np.rint(gaps)) <= tolerance_mm / spacing) and np.any(np.rint(gaps) >= 2):
            raise NotARegularVolume("missing-slice", "a gap of a whole number of slice spacings")
        raise NotARegularVolume("uneven-spacing", f"slice steps differ by more than {tolerance_mm} mm")
    return spacing


def load_volume(series_uid: str) -> VolumeRef:
    """Stack a series (ordered along its normal) into int16 values with rescale applied.

    The array is written once to the work folder as .npy; a second call reuses it. The file is
    named by the series and its instances, so late images (a study revision) load afresh.
    """
    files = series_files(series_uid)
    if len(files) < 2:
        raise InvalidInput("a volume needs at least two slices")
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path, _ in files]
    first = headers[0]
    z_spacing = check_geometry(headers)
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    shape = (len(files), int(first.Rows), int(first.Columns))
    key = "|".join([series_uid, *(uid for _, uid in files)])
    out = get_settings().work_dir / "volumes" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if not out.exists():
        volume = np.empty(shape, dtype=np.int16)
        for k, (path, _) in enumerate(files):
            ds = pydicom.dcmread(path)
            if (int(ds.Rows), int(ds.Columns)) != shape[1:]:
                raise InvalidInput("slices of the series differ in size")
            pixels = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
            volume[k] = np.clip(np.rint(pixels), -32768, 32767).astype(np.int16)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial.npy")
        np.save(tmp, volume)
        tmp.replace(out)
    return VolumeRef(
        series_uid=series_uid,
        path=str(out),
        shape_zyx=shape,
        spacing_zyx_mm=(z_spacing, row_mm, col_mm),
        origin_xyz_mm=tuple(float(v) for v in first.ImagePositionPatient),
        orientation=tuple(float(v) for v in first.ImageOrientationPatient),
        sop_instance_uids=tuple(uid for _, uid in files),
        kvp_values=tuple(sorted({float(h.KVP) for h in headers if h.get("KVP") not in (None, "")})),
        contrast_agent=next((str(h.ContrastBolusAgent) for h in headers if str(h.get("ContrastBolusAgent", "")).strip()), ""),
        burned_in_annotation=burned_in_value(h.get("BurnedInAnnotation") for h in headers),
        study_date=_study_date(first.get("StudyDate")),
    )


def _study_date(value) -> dt.date | None:  # noqa: ANN001 - a DA element value
    try:
        return dt.datetime.strptime(str(value), "%Y%m%d").date() if value else None
    except ValueError:
        return None


def read_volume(ref: VolumeRef) -> np.ndarray:
    return np.load(Path(ref.path), mmap_mode="r")


def source_datasets(series_uid: str) -> list[pydicom.Dataset]:
    """The series' datasets in volume order (for SR/SEG references), pixel data included."""
    return [pydicom.dcmread(path) for path, _ in series_files(series_uid)]
