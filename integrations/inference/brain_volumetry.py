"""Brain volumetry on a 3D T1: ONNX tissue/hippocampus labels, brain extraction, volumes.

Steps: resample to the model's 1 mm grid, divide by the 99th percentile, translate (whole
millimetres) so the head centroid sits at the template's, run the ONNX model (labels per voxel),
then clean up: the intracranial volume is the largest connected intracranial component with its
holes filled (brain extraction), each hippocampus its largest component. Volumes are voxel counts
times the voxel volume; the label map is returned on the input's own grid for the SEG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from integrations.inference.onnx_model import OnnxModel

INPUT_NAME = "t1"
OUTPUT_NAME = "labels"
HEAD_THRESHOLD = 0.2  # normalised intensity above which a voxel counts as head (not air or bone)
NORMALISATION_PERCENTILE = 99.0
# Model classes (models/brain_volumetry/graph.py CLASSES)
EXTRACRANIAL, CSF, GREY, WHITE, HIPPO_LEFT, HIPPO_RIGHT = range(6)
INTRACRANIAL = (CSF, GREY, WHITE, HIPPO_LEFT, HIPPO_RIGHT)
PARENCHYMA = (GREY, WHITE, HIPPO_LEFT, HIPPO_RIGHT)


@dataclass(frozen=True)
class BrainVolumetry:
    """Volumes (ml) and the cleaned class label map on the input grid (z, y, x)."""

    intracranial_ml: float
    brain_ml: float
    hippocampus_left_ml: float
    hippocampus_right_ml: float
    labels: np.ndarray  # uint8, classes EXTRACRANIAL..HIPPO_RIGHT
    shift_zyx_vox: tuple[int, int, int]


def normalise(t1: np.ndarray) -> np.ndarray:
    """Intensities divided by their 99th percentile (float32)."""
    scale = float(np.percentile(t1, NORMALISATION_PERCENTILE))
    if scale <= 0:
        raise ValueError("the volume is empty: no signal to normalise")
    return (np.asarray(t1, np.float32) / scale).astype(np.float32)


def head_centroid(normalised: np.ndarray) -> np.ndarray:
    """Centroid (z, y, x voxels) of the voxels brighter than HEAD_THRESHOLD."""
    mask = normalised > HEAD_THRESHOLD
    if not mask.any():
        raise ValueError("no head found in the volume")
    return np.array(ndi.center_of_mass(mask))


def template_shift(normalised: np.ndarray, template_centroid) -> tuple[int, int, int]:
    """Whole-voxel translation that puts this head's centroid on the template's."""
    return tuple(int(v) for v in np.rint(np.asarray(template_centroid) - head_centroid(normalised)))


def place(volume: np.ndarray, shift, shape) -> np.ndarray:
    """``volume`` translated by ``shift`` voxels into an array of ``shape`` (zeros outside)."""
    out = np.zeros(shape, volume.dtype)
    src, dst = [], []
    for n_in, n_out, s in zip(volume.shape, shape, shift):
        lo, hi = max(0, -s), min(n_in, n_out - s)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo + s, hi + s))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _resample(volume: np.ndarray, steps, shape, order: int) -> np.ndarray:
    return ndi.affine_transform(volume, steps, output_shape=tuple(shape), order=order, mode="nearest",
                                prefilter=False)


def clean_labels(labels: np.ndarray) -> np.ndarray:
    """Brain extraction and tidy-up: largest intracranial component, holes filled; largest hippocampi."""
    out = labels.copy()
    intracranial = np.isin(out, INTRACRANIAL)
    components, n = ndi.label(intracranial)
    if n == 0:
        return np.zeros_like(out)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    icv = ndi.binary_fill_holes(components == int(sizes.argmax()))
    out[~icv] = EXTRACRANIAL
    out[icv & (out == EXTRACRANIAL)] = CSF  # enclosed voxels read as bone or air: noise
    for side in (HIPPO_LEFT, HIPPO_RIGHT):
        parts, m = ndi.label(out == side)
        if m > 1:
            keep = int(np.bincount(parts.ravel())[1:].argmax()) + 1
            out[(parts > 0) & (parts != keep)] = GREY
    return out


def measure_brain(t1: np.ndarray, spacing_zyx_mm, model: OnnxModel) -> BrainVolumetry:
    """Segment and measure one T1 volume (z, y, x) with the brain volumetry model."""
    meta = model.metadata
    model_mm = float(meta.get("input_spacing_mm", "1.0"))
    template_shape = tuple(int(v) for v in meta["template_shape_zyx"].split(","))
    template_centroid = [float(v) for v in meta["template_head_centroid_zyx"].split(",")]
    spacing = np.abs(np.asarray(spacing_zyx_mm, float))
    steps = model_mm / spacing
    iso_shape = [int(np.floor((n - 1) / s)) + 1 for n, s in zip(t1.shape, steps)]
    same_grid = np.allclose(steps, 1.0)
    iso = np.asarray(t1, np.float32) if same_grid else _resample(np.asarray(t1, np.float32), steps, iso_shape, 1)
    norm = normalise(iso)
    shift = template_shift(norm, template_centroid)
    raw = model.run({INPUT_NAME: place(norm, shift, template_shape)[None, None]})[OUTPUT_NAME][0]
    labels_iso = place(clean_labels(raw), tuple(-s for s in shift), iso.shape)
    voxel_ml = model_mm**3 / 1000.0
    counts = np.bincount(labels_iso.ravel(), minlength=6)
    labels = labels_iso if same_grid else _resample(labels_iso, 1.0 / steps, t1.shape, 0)
    return BrainVolumetry(
        intracranial_ml=round(float(counts[list(INTRACRANIAL)].sum()) * voxel_ml, 3),
        brain_ml=round(float(counts[list(PARENCHYMA)].sum()) * voxel_ml, 3),
        hippocampus_left_ml=round(float(counts[HIPPO_LEFT]) * voxel_ml, 3),
        hippocampus_right_ml=round(float(counts[HIPPO_RIGHT]) * voxel_ml, 3),
        labels=labels.astype(np.uint8),
        shift_zyx_vox=shift,
    )
