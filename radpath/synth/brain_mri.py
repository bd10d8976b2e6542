"""A deterministic 3D T1-weighted brain MRI phantom with known volumes (pure numpy).

Grid: 160 (z) x 192 (y) x 160 (x) at 1 mm isotropic; voxel (k, j, i) at LPS position
``origin + (i, j, k)`` (columns to the patient's left, rows to posterior, slices feet to head).

Labels: 0 outside the skull vault, 1 extra-ventricular CSF, 2 ventricles, 3 grey matter,
4 white matter, 5 left hippocampus, 6 right hippocampus, 7 skull, 8 scalp.
Truth (voxel counts x 1 mm^3): intracranial volume = labels 1-6; whole-brain volume = labels
3-6 (parenchyma); hippocampal volumes = labels 5 and 6.

``atrophy`` (0..1) shrinks the brain (up to 10 % linear) and the hippocampi (up to 35 % of
volume) and widens sulci and ventricles; the skull and intracranial volume do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SHAPE = (160, 192, 160)
SPACING = (1.0, 1.0, 1.0)
LABELS = {"csf": 1, "ventricle": 2, "gm": 3, "wm": 4, "hippocampus_left": 5,
          "hippocampus_right": 6, "skull": 7, "scalp": 8}
T1_SIGNAL = {0: 5, 1: 250, 2: 230, 3: 620, 4: 880, 5: 600, 6: 600, 7: 120, 8: 900}
NOISE_SIGMA = 18.0


@dataclass(frozen=True)
class BrainPhantom:
    t1: np.ndarray  # uint16 (z, y, x)
    labels: np.ndarray  # uint8 (z, y, x)
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    atrophy: float
    intracranial_volume_ml: float
    brain_volume_ml: float
    hippocampus_left_ml: float
    hippocampus_right_ml: float
    ventricle_volume_ml: float


def _r2(z, y, x, c, semi):
    return ((z - c[0]) / semi[0]) ** 2 + ((y - c[1]) / semi[1]) ** 2 + ((x - c[2]) / semi[2]) ** 2


def make_brain_mri(seed: int, atrophy: float = 0.0) -> BrainPhantom:
    """A T1 brain phantom; same seed and atrophy give byte-identical arrays."""
    if not 0.0 <= atrophy <= 1.0:
        raise ValueError("atrophy is between 0 and 1")
    rng = np.random.default_rng([seed, 0xB1])
    nz, ny, nx = SHAPE
    origin = (-(nx - 1) / 2, -(ny - 1) / 2 - 10.0, -(nz - 1) / 2 + 10.0)
    z = (origin[2] + np.arange(nz, dtype=np.float32))[:, None, None]
    y = (origin[1] + np.arange(ny, dtype=np.float32))[None, :, None]
    x = (origin[0] + np.arange(nx, dtype=np.float32))[None, None, :]
    size = rng.uniform(0.95, 1.02)  # head size varies between patients
    head = np.array([72.0, 92.0, 74.0]) * size  # semi-axes z, y, x of the scalp surface
    centre = (10.0, -10.0, 0.0)
    labels = np.zeros(SHAPE, np.uint8)
    scalp = _r2(z, y, x, centre, head)
    labels[(scalp < 1) | ((z < centre[0]) & (np.hypot(x / 0.6, y - 20) < 45) & (scalp < 4))] = 8
    labels[_r2(z, y, x, centre, head - 6) < 1] = 7
    icv = _r2(z, y, x, centre, head - 12) < 1
    labels[icv] = LABELS["csf"]

    # Brain parenchyma: an ellipsoid with a lobulated surface, shrunk by atrophy.
    shrink = 1.0 - 0.10 * atrophy
    coarse = rng.standard_normal((6, 7, 6))
    bumps = ndimage.zoom(coarse, [n / c for n, c in zip(SHAPE, coarse.shape)], order=1)
    brain_r2 = _r2(z, y, x, centre, (head - 14.5) * shrink) * (1 + 0.04 * bumps)
    brain = icv & (brain_r2 < 1)
    # Sulci: CSF clefts in the outer cortex, wider with atrophy.
    phase = np.sin(0.45 * x + 0.9 * np.sin(0.11 * y)) * np.sin(0.41 * y + 0.8 * np.cos(0.09 * z))
    sulcus = (np.abs(phase) < 0.08 + 0.10 * atrophy) & (brain_r2 > 0.74)
    brain &= ~sulcus
    labels[brain] = LABELS["gm"]
    white = brain & (brain_r2 < 0.68) & ~((z < centre[0] - 30) & (y > 25))  # cerebellum GM-rich
    labels[white] = LABELS["wm"]
    cerebellum_wm = _r2(z, y, x, (centre[0] - 40, 38, 0), (8, 12, 22)) < 1
    labels[cerebellum_wm & brain] = LABELS["wm"]

    # Lateral ventricles enlarge with atrophy.
    grow = (1.0 + 1.6 * atrophy) ** (1 / 3)
    for side in (-1, 1):
        vent = _r2(z, y, x, (centre[0] + 14, -4, 11 * side), np.array([9, 26, 6]) * grow) < 1
        labels[vent & icv] = LABELS["ventricle"]
        horn = _r2(z, y, x, (centre[0] - 16, 2, 27 * side), np.array([3, 16, 3]) * grow) < 1
        labels[horn & icv] = LABELS["ventricle"]

    # Hippocampi (left = +x in LPS), medial to the temporal horns, shrink with atrophy.
    hippo_scale = (1.0 - 0.35 * atrophy) ** (1 / 3) * rng.uniform(0.95, 1.05)
    for side, label in ((1, LABELS["hippocampus_left"]), (-1, LABELS["hippocampus_right"])):
        semi = np.array([6.0, 20.0, 7.0]) * hippo_scale * rng.uniform(0.97, 1.03)
        hippo = _r2(z, y, x, (centre[0] - 20, 4, 22 * side), semi) < 1
        labels[hippo & icv] = label

    bias = 1.0 + 0.04 * (z - centre[0]) / 70.0  # mild receive-coil bias field
    signal = np.asarray([T1_SIGNAL[k] for k in range(9)], np.float32)[labels] * bias
    signal += rng.standard_normal(SHAPE, dtype=np.float32) * NOISE_SIGMA
    t1 = np.clip(np.rint(signal), 0, 4095).astype(np.uint16)

    counts = np.bincount(labels.ravel(), minlength=9)  # voxels of 1 mm^3; ml = count / 1000
    return BrainPhantom(
        t1=t1, labels=labels, spacing_zyx_mm=SPACING, origin_xyz_mm=tuple(float(v) for v in origin),
        atrophy=float(atrophy),
        intracranial_volume_ml=int(counts[1:7].sum()) / 1000, brain_volume_ml=int(counts[3:7].sum()) / 1000,
        hippocampus_left_ml=int(counts[5]) / 1000, hippocampus_right_ml=int(counts[6]) / 1000,
        ventricle_volume_ml=int(counts[2]) / 1000)
