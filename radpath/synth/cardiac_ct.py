"""A deterministic non-contrast cardiac CT (calcium scoring protocol) with exact Agatston truth.

Protocol: 3.0 mm axial slices at 3.0 mm spacing, 512 x 512 at 0.39 mm (20 cm field of view),
slice index from feet to head. Agatston scoring (Agatston et al., J Am Coll Cardiol
1990;15:827-32): per slice, a lesion's pixels >= 130 HU count if their area is >= 1 mm^2; the
area (mm^2) is multiplied by a weight from the lesion's peak HU in that slice (1: 130-199,
2: 200-299, 3: 300-399, 4: >= 400) and the products are summed over slices, lesions and vessels.

Exact truth: calcified lesions are ellipsoids along labelled coronary paths (LM, LAD, LCx, RCA)
in epicardial fat, drawn without noise and with every lesion voxel >= 131 HU (a smooth profile
from the peak at the centre). Noise (sigma 18 HU) is added everywhere else and then clipped
below 130 HU outside bone, so the pixels >= 130 HU near the heart are exactly the lesion
pixels; lesions are at least 5 mm apart and centred on a slice. The truth is computed from those noiseless lesion
pixels slice by slice with the rule above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE = (40, 512, 512)
SPACING = (3.0, 0.390625, 0.390625)  # 200 mm / 512
THRESHOLD_HU = 130  # Agatston 1990
MIN_AREA_MM2 = 1.0  # Agatston 1990
VESSELS = ("LM", "LAD", "LCx", "RCA")
_HEART_C = (-10.0, 5.0, 8.0)  # z, y, x (mm)
_HEART_SEMI = (50.0, 42.0, 52.0)


def agatston_weight(peak_hu: float) -> int:
    """Density weighting factor of Agatston et al. 1990 (0 below 130 HU)."""
    if peak_hu >= 400:
        return 4
    if peak_hu >= 300:
        return 3
    if peak_hu >= 200:
        return 2
    if peak_hu >= THRESHOLD_HU:
        return 1
    return 0


@dataclass(frozen=True)
class LesionTruth:
    index: int
    vessel: str
    centre_xyz_mm: tuple[float, float, float]
    peak_hu: int
    agatston: float
    slices: tuple[int, ...]  # slice indices where the lesion counts (area >= 1 mm^2)


@dataclass(frozen=True)
class CardiacPhantom:
    hu: np.ndarray  # int16 (z, y, x)
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    lesions: tuple[LesionTruth, ...]
    agatston_by_vessel: dict[str, float]
    agatston_total: float


def _surface_point(phi_deg: float, z: float, scale: float = 1.07) -> np.ndarray:
    """A point (z, y, x mm) on the epicardial surface at azimuth phi (0 = patient left, -90 = anterior)."""
    t = np.clip((z - _HEART_C[0]) / _HEART_SEMI[0], -0.95, 0.95)
    ring = np.sqrt(1 - t**2) * scale
    phi = np.radians(phi_deg)
    return np.array([z, _HEART_C[1] + _HEART_SEMI[1] * ring * np.sin(phi),
                     _HEART_C[2] + _HEART_SEMI[2] * ring * np.cos(phi)])


def vessel_path(vessel: str, s: float) -> np.ndarray:
    """Point at fraction s (0..1) along a coronary path, mm (z, y, x)."""
    if vessel == "LM":
        return _surface_point(-130 + 40 * s, 28.0)
    if vessel == "LAD":
        return _surface_point(-85 + 20 * s, 26.0 - 70.0 * s)
    if vessel == "LCx":
        return _surface_point(-85 + 120 * s, 22.0 - 12.0 * s)
    return _surface_point(-140 - 120 * s, 18.0 - 45.0 * s * s)  # RCA, round the right side


def _anatomy(grid_z, grid_y, grid_x) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = grid_z[:, None, None], grid_y[None, :, None], grid_x[None, None, :]
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[:] = np.where(((x / 190) ** 2 + ((y - 10) / 125) ** 2) < 1, 45.0, -1000.0)[0]
    lungs = ((np.abs(x[0]) - 70) / 45) ** 2 + ((y[0] - 10) / 85) ** 2 < 1
    hu[:, lungs] = -860.0
    r2 = ((z - _HEART_C[0]) / _HEART_SEMI[0]) ** 2 + ((y - _HEART_C[1]) / _HEART_SEMI[1]) ** 2 \
        + ((x - _HEART_C[2]) / _HEART_SEMI[2]) ** 2
    hu[r2 < 1.35] = -95.0  # epicardial/pericardial fat, where the coronaries run
    hu[r2 < 1.0] = 40.0
    hu[:, np.hypot(x[0] - 25, y[0] - 62) < 13] = 40.0  # descending aorta
    bone = np.zeros(SHAPE, bool)
    bone[:, np.hypot(x[0], y[0] - 85) < 16] = True  # vertebral body
    bone[:, (np.abs(x[0]) < 14) & (np.abs(y[0] + 95) < 6)] = True  # sternum
    hu[bone] = 450.0
    return hu, bone


def make_cardiac_ct(seed: int, n_lesions: int | None = None) -> CardiacPhantom:
    """A calcium-scoring CT; same seed, byte-identical volume and truth."""
    rng = np.random.default_rng([seed, 0xCA])
    nz, ny, nx = SHAPE
    dz, dy, dx = SPACING
    origin = (-(nx - 1) / 2 * dx, -(ny - 1) / 2 * dy, -(nz - 1) / 2 * dz)
    gz = (origin[2] + dz * np.arange(nz)).astype(np.float32)
    gy = (origin[1] + dy * np.arange(ny)).astype(np.float32)
    gx = (origin[0] + dx * np.arange(nx)).astype(np.float32)
    hu, bone = _anatomy(gz, gy, gx)
    hu += rng.standard_normal(SHAPE, dtype=np.float32) * 18.0
    np.minimum(hu, THRESHOLD_HU - 1, out=hu, where=~bone)

    count = int(rng.integers(0, 7)) if n_lesions is None else n_lesions
    centres: list[np.ndarray] = []
    lesions = []
    for index in range(1, count + 1):
        while True:
            vessel = str(rng.choice(VESSELS, p=[0.1, 0.4, 0.2, 0.3]))
            centre = vessel_path(vessel, float(rng.uniform(0.05, 0.95)))
            semi = rng.uniform([0.8, 0.6, 0.6], [3.5, 2.2, 2.2])  # z, y, x mm
            if all(np.linalg.norm(centre - c) > 12.0 for c in centres) and abs(centre[0]) < 50:
                break
        centres.append(centre)
        peak = int(rng.integers(150, 1000))
        centre = centre.copy()  # centred on the nearest slice, so every lesion shows
        centre[0] = gz[int(round((centre[0] - origin[2]) / dz))]
        lo, hi = centre - semi - 1e-3, centre + semi + 1e-3
        kz = np.nonzero((gz >= lo[0]) & (gz <= hi[0]))[0]
        jy = np.nonzero((gy >= lo[1]) & (gy <= hi[1]))[0]
        ix = np.nonzero((gx >= lo[2]) & (gx <= hi[2]))[0]
        box = np.ix_(kz, jy, ix)
        r2 = ((gz[kz][:, None, None] - centre[0]) / semi[0]) ** 2 \
            + ((gy[jy][None, :, None] - centre[1]) / semi[1]) ** 2 \
            + ((gx[ix][None, None, :] - centre[2]) / semi[2]) ** 2
        inside = r2 <= 1.0
        values = np.rint(131 + (peak - 131) * (1 - r2)).astype(np.float32)
        region = hu[box]
        region[inside] = values[inside]
        hu[box] = region
        score, counted = 0.0, []
        for s, k in enumerate(kz):
            pixels = values[s][inside[s]]
            area = pixels.size * dy * dx
            if area >= MIN_AREA_MM2:
                score += area * agatston_weight(float(pixels.max()))
                counted.append(int(k))
        lesions.append(LesionTruth(index=index, vessel=vessel,
                                   centre_xyz_mm=(float(centre[2]), float(centre[1]), float(centre[0])),
                                   peak_hu=int(values[inside].max()), agatston=float(score),
                                   slices=tuple(counted)))
    by_vessel = {v: float(sum(lesion.agatston for lesion in lesions if lesion.vessel == v)) for v in VESSELS}
    return CardiacPhantom(hu=np.clip(np.rint(hu), -1024, 3071).astype(np.int16),
                          spacing_zyx_mm=SPACING, origin_xyz_mm=tuple(float(v) for v in origin),
                          lesions=tuple(lesions), agatston_by_vessel=by_vessel,
                          agatston_total=float(sum(lesion.agatston for lesion in lesions)))
