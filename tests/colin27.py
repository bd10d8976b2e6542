"""Colin27 (Holmes et al., J Comput Assist Tomogr 1998;22:324-333), a real adult T1 brain, as a DICOM MR series.

From Debian's `mricron-data` (installed by scripts/install-system-deps.sh): `ch2.nii.gz` (the head)
and `ch2bet.nii.gz` (its brain, extracted with FSL BET). Read with a minimal NIfTI-1 reader (no
nibabel dependency): 1 mm, 181 x 217 x 181, uint8, sform in MNI RAS space, turned to DICOM LPS.
"""

from __future__ import annotations

import copy
import gzip
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

TEMPLATES = Path("/usr/share/mricron/templates")
HEAD, BRAIN = TEMPLATES / "ch2.nii.gz", TEMPLATES / "ch2bet.nii.gz"


def read_nifti_lps(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(volume (z, y, x) in LPS order: +x patient left, +y posterior, +z superior; LPS origin, mm)."""
    raw = gzip.open(path).read()
    assert struct.unpack("<i", raw[:4])[0] == 348, "little-endian NIfTI-1 expected"
    dims = struct.unpack("<8h", raw[40:56])
    datatype = struct.unpack("<h", raw[70:72])[0]
    offset = int(struct.unpack("<f", raw[108:112])[0])
    srow = [struct.unpack("<4f", raw[280 + 16 * r: 296 + 16 * r]) for r in range(3)]
    assert datatype == 2 and srow[0][:3] == (1, 0, 0) and srow[1][:3] == (0, 1, 0) and srow[2][:3] == (0, 0, 1)
    nx, ny, nz = dims[1:4]
    ras = np.frombuffer(raw[offset: offset + nx * ny * nz], np.uint8).reshape(nz, ny, nx)
    # RAS to LPS: flip x and y; voxel (0, 0, 0) of the flipped array is i = nx-1, j = ny-1.
    lps = np.ascontiguousarray(ras[:, ::-1, ::-1])
    origin = (-(srow[0][3] + nx - 1), -(srow[1][3] + ny - 1), srow[2][3])
    return lps, origin


def brain_mask_ml() -> float:
    """The volume of ch2bet's brain (voxels > 0, 1 mm): the reference an intracranial measure is held to."""
    brain, _ = read_nifti_lps(BRAIN)
    return float((brain > 0).sum()) / 1000.0


def write_colin27_over(template_files: list[Path], out_dir: Path) -> list[bytes]:
    """Colin27 as one axial MR series carrying the template study's patient, study and order
    identifiers (from the first template file): the encoded files, in slice order."""
    head, origin = read_nifti_lps(HEAD)
    template = pydicom.dcmread(template_files[0])
    series_uid = generate_uid()
    encoded = []
    for k in range(head.shape[0]):
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription, ds.InstanceNumber = "T1 3D 1mm (Colin27)", k + 1
        ds.Rows, ds.Columns = head.shape[1], head.shape[2]
        ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [1.0, 1.0], 1.0, 1.0
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = origin[2] + k
        ds.PixelData = (head[k].astype(np.uint16) * 16).tobytes()  # 8 bit to the template's 12 bit
        path = out_dir / f"{k + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        encoded.append(path.read_bytes())
    return encoded
