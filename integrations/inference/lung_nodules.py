"""Lung nodule detection on a CT volume: ONNX probability map, candidates, full-resolution measurement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from integrations.inference.onnx_model import OnnxModel
from pathways.findings import Nodule
from pathways.lung_anatomy import Lungs, lung_extents_from_mask
from pathways.lung_nodule_measurement import (
    SPICULATION_CUTOFF,
    NoduleMeasurement,
    lung_mask_from_hu,
    measure_nodule,
)

DEFAULT_MODEL_SPACING_MM = 2.0
INPUT_NAME = "ct_hu"
OUTPUT_NAME = "nodule_probability"
# Optional shape gate on measured candidates (min short/long axial axis, min volume / sphere of the
# long axis), read from the model's metadata (min_roundness, min_compactness): a filter-bank model
# that cannot tell vessel branch points from nodules needs one (v1.1.0's roundness >= 0.9 rejects
# ellipsoidal nodules too); a network that judges shape itself sets both to 0 (the U-Net candidate
# of train_detector.py). These defaults serve models without them.
MIN_ROUNDNESS = 0.85
MIN_COMPACTNESS = 0.6
MAX_CANDIDATES = 40  # most probable candidates measured per study (bounds the run time)


def resample_to_spacing(volume: np.ndarray, spacing_zyx_mm, target_mm: float) -> np.ndarray:
    """Trilinear resampling of a (z, y, x) volume onto an isotropic grid sharing voxel (0, 0, 0)."""
    steps = np.array([target_mm / abs(float(s)) for s in spacing_zyx_mm])
    shape = tuple(int(np.floor((n - 1) / step)) + 1 for n, step in zip(volume.shape, steps))
    return ndi.affine_transform(volume.astype(np.float32, copy=False), steps, output_shape=shape,
                                order=1, mode="nearest", prefilter=False)


def model_spacing_mm(model: OnnxModel) -> float:
    return float(model.metadata.get("input_spacing_mm", DEFAULT_MODEL_SPACING_MM))


LUNG_BOX_MARGIN_MM = 16.0  # context kept around the lungs when the model runs on their bounding box


def _lung_box(coarse_hu: np.ndarray, margin_vox: int) -> tuple[slice, ...] | None:
    mask = lung_mask_from_hu(coarse_hu)
    if not mask.any():
        return None
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin_vox, 0)
    hi = np.minimum(idx.max(0) + margin_vox + 1, coarse_hu.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def probability_map(volume_hu: np.ndarray, spacing_zyx_mm, model: OnnxModel) -> tuple[np.ndarray, np.ndarray]:
    """(resampled HU volume, nodule probability) on the model's isotropic grid.

    A model whose metadata declares ``input_multiple`` (a U-Net's pooling factor) runs on the
    lungs' bounding box plus a margin, edge-padded to that multiple; outside it the probability is 0.
    """
    coarse = resample_to_spacing(volume_hu, spacing_zyx_mm, model_spacing_mm(model))
    multiple = int(model.metadata.get("input_multiple", 0))
    if not multiple:
        return coarse, model.run({INPUT_NAME: coarse[None, None]})[OUTPUT_NAME][0, 0]
    prob = np.zeros(coarse.shape, np.float32)
    box = _lung_box(coarse, int(round(LUNG_BOX_MARGIN_MM / model_spacing_mm(model))))
    if box is None:
        return coarse, prob
    sub = coarse[box]
    padded = np.pad(sub, [(0, -n % multiple) for n in sub.shape], mode="edge")
    out = model.run({INPUT_NAME: padded[None, None]})[OUTPUT_NAME][0, 0]
    prob[box] = out[tuple(slice(0, n) for n in sub.shape)]
    return coarse, prob


def candidates(prob: np.ndarray, threshold: float) -> list[tuple[tuple[int, int, int], float, float]]:
    """(peak voxel, peak probability, component volume in voxels) of each connected region above threshold."""
    labels, n = ndi.label(prob >= threshold)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    peaks = ndi.maximum_position(prob, labels, index)
    maxima = ndi.maximum(prob, labels, index)
    sizes = ndi.sum_labels(np.ones_like(prob, dtype=np.float32), labels, index)
    return [(tuple(int(v) for v in p), float(m), float(s)) for p, m, s in zip(peaks, maxima, sizes)]


def _lungs(coarse_hu: np.ndarray, spacing_zyx_mm, coarse_mm: float, origin_xyz_mm) -> Lungs | None:
    mask = lung_mask_from_hu(coarse_hu)
    signed = tuple(float(np.sign(s) or 1.0) * coarse_mm for s in spacing_zyx_mm)
    try:
        return lung_extents_from_mask(mask, signed, tuple(origin_xyz_mm))
    except ValueError:
        return None


def _patient_xyz(centre_zyx_vox, spacing_zyx_mm, origin_xyz_mm) -> tuple[float, float, float]:
    """Patient (LPS) position of a voxel position: origin + (i*dx, j*dy, k*dz), axial slices."""
    k, j, i = centre_zyx_vox
    dz, dy, dx = (float(s) for s in spacing_zyx_mm)
    x0, y0, z0 = (float(v) for v in origin_xyz_mm)
    return (x0 + i * dx, y0 + j * dy, z0 + k * dz)


@dataclass(frozen=True)
class Detection:
    """One measured candidate before it becomes a ``Nodule`` (keeps the raw scores)."""

    measurement: NoduleMeasurement
    confidence: float
    centre_xyz_mm: tuple[float, float, float]
    lobe: str


def _measure(volume_hu, spacing_zyx_mm, seed, approx_d, cutoff) -> NoduleMeasurement | None:
    m = measure_nodule(volume_hu, spacing_zyx_mm, seed, approx_d, cutoff)
    if m is not None and m.long_axis_mm > 1.3 * approx_d:  # bigger than guessed: widen the crop
        m = measure_nodule(volume_hu, spacing_zyx_mm, seed, m.long_axis_mm, cutoff)
    return m


def measure_candidates(volume_hu: np.ndarray, spacing_zyx_mm, prob: np.ndarray, coarse_mm: float,
                       threshold: float, spiculation_cutoff: float) -> list[tuple[NoduleMeasurement, float]]:
    """(measurement, peak probability) of the most probable candidates of a probability map."""
    scale = np.array([coarse_mm / abs(float(s)) for s in spacing_zyx_mm])
    measured = []
    for peak, confidence, n_vox in sorted(candidates(prob, threshold), key=lambda c: -c[1])[:MAX_CANDIDATES]:
        seed = tuple(int(min(round(p * f), n - 1)) for p, f, n in zip(peak, scale, volume_hu.shape))
        approx_d = max(6.0, 2.0 * coarse_mm * (3.0 * n_vox / (4.0 * np.pi)) ** (1.0 / 3.0))
        m = _measure(volume_hu, spacing_zyx_mm, seed, approx_d, spiculation_cutoff)
        if m is not None:
            measured.append((m, float(min(max(confidence, 0.0), 1.0))))
    return measured


def select_nodules(measured: list[tuple[NoduleMeasurement, float]], spacing_zyx_mm, *, threshold: float,
                   min_roundness: float, min_compactness: float,
                   min_diameter_mm: float = 3.0) -> list[tuple[NoduleMeasurement, float]]:
    """Candidates (most probable first) that pass confidence, size and shape, one per nodule."""
    voxel_mm = np.abs(np.array(spacing_zyx_mm, float))
    kept: list[tuple[NoduleMeasurement, float]] = []
    for m, confidence in measured:
        if confidence < threshold or m.long_axis_mm < min_diameter_mm:
            continue
        if m.roundness < min_roundness or m.compactness < min_compactness:
            continue
        centre_mm = np.array(m.centre_zyx_vox) * voxel_mm
        if any(np.linalg.norm(centre_mm - np.array(o.centre_zyx_vox) * voxel_mm)
               < 0.5 * max(o.long_axis_mm, m.long_axis_mm) for o, _ in kept):
            continue  # the same nodule reached from a second candidate
        kept.append((m, confidence))
    return kept


def find_nodules(volume_hu: np.ndarray, spacing_zyx_mm, origin_xyz_mm, model: OnnxModel, *,
                 threshold: float | None = None, min_diameter_mm: float = 3.0,
                 spiculation_cutoff: float | None = None) -> list[Detection]:
    """Measured detections, largest first; thresholds and shape cut-offs default to the model's metadata."""
    meta = model.metadata
    if threshold is None:
        threshold = float(meta.get("operating_threshold", 0.5))
    if spiculation_cutoff is None:
        spiculation_cutoff = float(meta.get("spiculation_cutoff", SPICULATION_CUTOFF))
    coarse_mm = model_spacing_mm(model)
    coarse, prob = probability_map(volume_hu, spacing_zyx_mm, model)
    measured = measure_candidates(volume_hu, spacing_zyx_mm, prob, coarse_mm, threshold, spiculation_cutoff)
    kept = select_nodules(measured, spacing_zyx_mm, threshold=threshold, min_diameter_mm=min_diameter_mm,
                          min_roundness=float(meta.get("min_roundness", MIN_ROUNDNESS)),
                          min_compactness=float(meta.get("min_compactness", MIN_COMPACTNESS)))
    lungs = _lungs(coarse, spacing_zyx_mm, coarse_mm, origin_xyz_mm) if kept else None
    found = []
    for m, confidence in kept:
        xyz = _patient_xyz(m.centre_zyx_vox, spacing_zyx_mm, origin_xyz_mm)
        lobe = lungs.lobe_of(xyz) if lungs is not None else _fallback_lobe(xyz)
        found.append(Detection(m, confidence, xyz, lobe))
    found.sort(key=lambda d: -d.measurement.volume_mm3)
    return found[:255]


def detect_nodules(volume_hu: np.ndarray, spacing_zyx_mm, origin_xyz_mm, model: OnnxModel, *,
                   threshold: float | None = None, min_diameter_mm: float = 3.0) -> tuple[list[Nodule], np.ndarray]:
    """Nodules (index 1.. by descending volume) and a uint8 label mask (label k = nodule k).

    ``threshold`` defaults to the operating point stored in the model's metadata at build time.
    Geometry: axial slices, voxel (k, j, i) at origin + (i*dx, j*dy, k*dz) in patient LPS mm.
    """
    detections = find_nodules(volume_hu, spacing_zyx_mm, origin_xyz_mm, model,
                              threshold=threshold, min_diameter_mm=min_diameter_mm)
    labels = np.zeros(volume_hu.shape, np.uint8)
    nodules = []
    for index, d in enumerate(detections, start=1):
        m = d.measurement
        region = labels[m.crop]
        region[m.mask & (region == 0)] = index
        nodules.append(Nodule(
            index=index, centre_zyx_vox=m.centre_zyx_vox, centre_xyz_mm=d.centre_xyz_mm,
            long_axis_mm=round(m.long_axis_mm, 2), short_axis_mm=round(m.short_axis_mm, 2),
            mean_diameter_mm=round(m.mean_diameter_mm, 2), volume_mm3=round(m.volume_mm3, 1),
            nodule_type=m.nodule_type, spiculated=m.spiculated, lobe=d.lobe,
            mean_hu=round(m.mean_hu, 1), confidence=round(d.confidence, 4),
        ))
    return nodules, labels


def _fallback_lobe(xyz) -> str:
    """Without a lung mask only the side is known (x < 0 is the patient's right): upper lobe."""
    return "RUL" if xyz[0] < 0 else "LUL"
