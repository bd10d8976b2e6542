"""Load an ultrasound multi-frame cine (e.g. an apical four-chamber echo) once, by reference.

US Multi-frame Image Storage holds the whole cine in one instance (NumberOfFrames), with no
slice geometry: the pixel size comes from the US Region Calibration module (PS3.3 C.8.5.5,
Sequence of Ultrasound Regions: Physical Units 3 = cm, Physical Delta X/Y). Colour cines
(RGB, or YBR decoded to RGB by pydicom) become grey by ITU-R BT.601 luma.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom

from integrations.dicom.store import series_files
from integrations.errors import InvalidInput
from integrations.settings import get_settings
from pathways.disclosure import burned_in_value
from pathways.heart_failure import CineRef

_CM = 3  # Physical Units X/Y Direction: 3 = cm (PS3.3 C.8.5.5.1.15)
_TISSUE_2D = 1  # Region Spatial Format: 1 = 2D (tissue or flow)


def calibrated_region(ds: pydicom.Dataset) -> tuple[tuple[int, int, int, int], float]:
    """The largest 2D region calibrated in cm with square pixels: (region, cm per pixel)."""
    best = None
    for reg in ds.get("SequenceOfUltrasoundRegions", []):
        if reg.get("RegionSpatialFormat") != _TISSUE_2D:
            continue
        if reg.get("PhysicalUnitsXDirection") != _CM or reg.get("PhysicalUnitsYDirection") != _CM:
            continue
        dx, dy = float(reg.PhysicalDeltaX), float(reg.PhysicalDeltaY)
        if dx <= 0 or abs(dx - dy) > 1e-3 * dx:
            continue
        box = (int(reg.RegionLocationMinX0), int(reg.RegionLocationMinY0),
               int(reg.RegionLocationMaxX1), int(reg.RegionLocationMaxY1))
        area = (box[2] - box[0]) * (box[3] - box[1])
        if best is None or area > best[0]:
            best = (area, box, abs(dx))
    if best is None:
        raise InvalidInput("the cine has no 2D ultrasound region calibrated in cm")
    return best[1], best[2]


def grey_frames(ds: pydicom.Dataset) -> np.ndarray:
    """(frames, rows, cols) uint8 grey-scale, whatever the photometric interpretation."""
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    if frames == 1:
        pixels = pixels[None]
    if samples == 3:
        pixels = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    pixels = np.asarray(pixels, np.float32)
    if pixels.max() > 255:
        pixels = pixels * (255.0 / pixels.max())
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def load_cine_file(path: Path, cache_dir: Path | None = None) -> CineRef:
    """Decode one US multi-frame file into the cine cache (written once, reused after)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if int(ds.get("NumberOfFrames", 1) or 1) < 2:
        raise InvalidInput("an echo cine needs a multi-frame image")
    region, cm_per_pixel = calibrated_region(ds)
    cache = cache_dir or get_settings().work_dir / "cines"
    out = cache / f"{hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:24]}.npy"
    if not out.exists():
        frames = grey_frames(pydicom.dcmread(path))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial.npy")
        np.save(tmp, frames)
        tmp.replace(out)
    frame_time = ds.get("FrameTime")
    heart_rate = ds.get("HeartRate")
    return CineRef(
        series_uid=str(ds.SeriesInstanceUID), sop_instance_uid=str(ds.SOPInstanceUID), path=str(out),
        n_frames=int(ds.NumberOfFrames), rows=int(ds.Rows), columns=int(ds.Columns),
        cm_per_pixel=cm_per_pixel, region=region,
        frame_time_ms=float(frame_time) if frame_time not in (None, "") else None,
        heart_rate_bpm=int(heart_rate) if heart_rate not in (None, "") else None,
        burned_in_annotation=burned_in_value([ds.get("BurnedInAnnotation")]),
    )


def load_cine(series_uid: str) -> CineRef:
    """The longest multi-frame cine of a stored series."""
    candidates = []
    for path, _ in series_files(series_uid):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        candidates.append((int(ds.get("NumberOfFrames", 1) or 1), path))
    if not candidates:
        raise InvalidInput("the series holds no instances")
    frames, path = max(candidates, key=lambda c: c[0])
    return load_cine_file(path)


def read_cine(ref: CineRef) -> np.ndarray:
    return np.load(Path(ref.path), mmap_mode="r")
