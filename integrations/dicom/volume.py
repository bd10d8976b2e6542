"""Load a stored series into a 3D volume once, and keep it on local disk by reference."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom

from integrations.dicom.store import series_files
from integrations.errors import InvalidInput
from integrations.settings import get_settings
from pathways.findings import VolumeRef


def load_volume(series_uid: str) -> VolumeRef:
    """Stack a series (ordered along its normal) into int16 values with rescale applied.

    The array is written once to the work folder as .npy; a second call reuses it. The file is
    named by the series and its instances, so late images (a study revision) load afresh.
    """
    files = series_files(series_uid)
    if len(files) < 2:
        raise InvalidInput("a volume needs at least two slices")
    first = pydicom.dcmread(files[0][0], stop_before_pixels=True)
    last = pydicom.dcmread(files[-1][0], stop_before_pixels=True)
    positions = np.array([first.ImagePositionPatient, last.ImagePositionPatient], dtype=float)
    z_spacing = float(np.linalg.norm(positions[1] - positions[0]) / (len(files) - 1))
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
    )


def read_volume(ref: VolumeRef) -> np.ndarray:
    return np.load(Path(ref.path), mmap_mode="r")


def source_datasets(series_uid: str) -> list[pydicom.Dataset]:
    """The series' datasets in volume order (for SR/SEG references), pixel data included."""
    return [pydicom.dcmread(path) for path, _ in series_files(series_uid)]
