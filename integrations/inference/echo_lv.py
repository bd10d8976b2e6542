"""Left-ventricular cavity segmentation of an apical four-chamber cine with the echo-lv ONNX model.

The model contract (models/echo_lv/MODEL_CARD.md): input "image" float32 (N, 1, H, W), one
grey-scale frame per item, resampled to MODEL_CM_PER_PIXEL with H and W multiples of 8 and
intensities scaled to 0..1 by the cine's 99th percentile; output "lv_probability" of the
same shape. This module does the resampling both ways and keeps, per frame, the largest
connected cavity (holes filled). Pure numpy/scipy around onnxruntime; no Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from integrations.inference.onnx_model import OnnxModel

MODEL_CM_PER_PIXEL = 0.2
_MULTIPLE = 8
_BATCH = 16


@dataclass(frozen=True)
class ModelGrid:
    """Where the model grid sits in the native frame: the calibrated region, rescaled."""

    region: tuple[int, int, int, int]  # min_x, min_y, max_x, max_y (inclusive), native pixels
    scale: float  # native pixels per model pixel
    shape: tuple[int, int]  # model grid rows, columns (padded to a multiple of 8)


def model_grid(region: tuple[int, int, int, int], cm_per_pixel: float) -> ModelGrid:
    x0, y0, x1, y1 = region
    scale = MODEL_CM_PER_PIXEL / cm_per_pixel
    rows = int(np.ceil((y1 - y0 + 1) / scale / _MULTIPLE) * _MULTIPLE)
    cols = int(np.ceil((x1 - x0 + 1) / scale / _MULTIPLE) * _MULTIPLE)
    return ModelGrid(region=region, scale=scale, shape=(rows, cols))


def to_model_input(frames: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """(n, rows, cols) grey frames → (n, 1, H, W) float32 on the model grid, 0..1."""
    x0, y0, x1, y1 = grid.region
    crop = frames[:, y0 : y1 + 1, x0 : x1 + 1].astype(np.float32)
    scale = np.percentile(crop[crop > 0], 99) if np.any(crop > 0) else 1.0
    crop = np.clip(crop / max(float(scale), 1e-6), 0.0, 1.0)
    rows = np.arange(grid.shape[0]) * grid.scale
    cols = np.arange(grid.shape[1]) * grid.scale
    out = np.zeros((len(frames), 1, *grid.shape), np.float32)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    inside = (rr <= crop.shape[1] - 1) & (cc <= crop.shape[2] - 1)
    for k, frame in enumerate(crop):
        sampled = ndimage.map_coordinates(frame, [rr, cc], order=1, mode="constant", cval=0.0)
        out[k, 0] = np.where(inside, sampled, 0.0)
    return out


def to_native(probability: np.ndarray, grid: ModelGrid, frame_shape: tuple[int, int]) -> np.ndarray:
    """(H, W) probability on the model grid → (rows, cols) probability in native pixels."""
    x0, y0, x1, y1 = grid.region
    yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float32)
    coords = [(yy - y0) / grid.scale, (xx - x0) / grid.scale]
    out = np.zeros(frame_shape, np.float32)
    out[y0 : y1 + 1, x0 : x1 + 1] = ndimage.map_coordinates(probability, coords, order=1, mode="nearest")
    return out


def largest_cavity(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a 2D mask, holes filled (empty stays empty)."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))


def segment_lv(
    frames: np.ndarray,
    region: tuple[int, int, int, int],
    cm_per_pixel: float,
    model: OnnxModel,
    threshold: float = 0.5,
) -> np.ndarray:
    """LV cavity mask per frame, bool (n, rows, cols), in native pixels."""
    if frames.ndim != 3:
        raise ValueError("frames must be (n, rows, cols) grey-scale")
    grid = model_grid(region, cm_per_pixel)
    inputs = to_model_input(frames, grid)
    masks = np.zeros(frames.shape, bool)
    for start in range(0, len(frames), _BATCH):
        batch = inputs[start : start + _BATCH]
        probability = model.run({"image": batch})["lv_probability"]
        for k, p in enumerate(probability[:, 0]):
            masks[start + k] = largest_cavity(to_native(p, grid, frames.shape[1:]) >= threshold)
    return masks
