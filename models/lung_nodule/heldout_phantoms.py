"""Held-out chest CTs for evaluating the lung nodule detector: never used for fitting or thresholds.

Written separately from `radpath/synth/chest_ct.py` and from the training generator
(`breadth_phantoms.py`), with another anatomy and another shape model, so that a detector fitted
to either cannot pass by recognising how they draw:

- 512 x 512 at 0.7 mm (358 mm field of view), 1.0, 1.25 or 1.5 mm slices over 260 mm;
- body and lungs are superellipses whose size follows a sine profile to the apices, a domed
  diaphragm, heart, aorta, spine and ribs as bands that follow the body contour;
- pulmonary vessels are cubic Bezier curves from each hilum, swept spheres tapering 5 to 0.8 mm;
- nodules, 4-30 mm long axis: spheres and ellipsoids (Mahalanobis form of a random rotation,
  axis ratios 0.5-1); solid, ground-glass (-650 to -450 HU) and part-solid (a solid core of
  40-60 %); free in the lung, juxtapleural (touching the pleura), or crossed by a straight vessel
  (drawn over the nodule: ground glass does not hide vessels);
- in-plane blur 0.5-0.9 mm, slice partial volume, noise 15-35 HU.

Truth per nodule: centre, long axial diameter (largest axial Feret diameter of the voxel-centre
mask), volume (voxel centres inside the body times the voxel volume), type, shape and vessel
contact. `diameter_mm` is the long axis (the matcher in evaluate.py reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MATRIX, PIXEL_MM, COVERAGE_MM = 512, 0.7, 260.0


@dataclass(frozen=True)
class HeldoutNodule:
    index: int
    centre_zyx_vox: tuple[float, float, float]
    centre_xyz_mm: tuple[float, float, float]
    diameter_mm: float  # long axial diameter
    volume_mm3: float
    nodule_type: str
    shape: str  # sphere | ellipsoid
    contact: str  # free | juxtapleural | vessel-crossing
    spiculated: bool = False
    lobe: str | None = None


@dataclass(frozen=True)
class HeldoutChest:
    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    nodules: tuple[HeldoutNodule, ...]


def _superellipse(x, y, cx, cy, a, b, p=2.6):
    return np.abs((x - cx) / a) ** p + np.abs((y - cy) / b) ** p


def _anatomy(rng, z, y, x) -> tuple[np.ndarray, np.ndarray]:
    """HU volume without vessels or nodules, and the lung mask."""
    nz = z.shape[0]
    hu = np.full((nz, y.shape[1], x.shape[2]), -1000.0, np.float32)
    lung = np.zeros(hu.shape, bool)
    body = _superellipse(x, y, 0, 0, 168 + rng.uniform(-8, 8), 122 + rng.uniform(-6, 6), 2.2)[0]
    inner = _superellipse(x, y, 0, 0, 150, 106, 2.2)[0]
    slab = np.where(body < 1, 35.0, -1000.0).astype(np.float32)
    slab[body < 0.86] = -95.0
    slab[inner < 1] = 48.0
    angle = np.arctan2(y[0], x[0])
    heart_z = -45 + rng.uniform(-10, 10)
    diaphragm = -105 + rng.uniform(-8, 8)
    for k in range(nz):
        zk = float(z[k, 0, 0])
        hu[k] = slab
        apex = np.clip((zk - 40.0) / 90.0, 0, 1)
        scale = np.sqrt(np.clip(1 - apex ** 2, 0, 1)) * (1 + 0.1 * np.clip((-zk) / 120, 0, 1))
        dome = diaphragm + 25 * np.exp(-((x[0] + 60) ** 2 + y[0] ** 2) / 5000) + 20 * np.exp(-((x[0] - 60) ** 2 + y[0] ** 2) / 5000)
        if scale > 0.05:
            for cx in (-70.0, 70.0):
                ls = _superellipse(x[0], y[0], cx, 4, 56 * scale, 84 * scale, 2.4) < 1
                lung[k] |= ls & (zk > dome)
        heart = ((x[0] - 20) / 60) ** 2 + ((y[0] + 28) / 48) ** 2 + ((zk - heart_z) / 40) ** 2 < 1
        lung[k] &= ~heart
        hu[k][heart] = 45.0
        hu[k][(zk <= dome) & (inner < 1)] = 58.0  # liver / spleen under the diaphragm
        hu[k][np.hypot(x[0] - 24, y[0] - 62) < 12] = 45.0  # descending aorta
        vert = np.hypot(x[0], y[0] - 76) < 16
        hu[k][vert] = 320.0
        hu[k][vert & (np.hypot(x[0], y[0] - 76) > 13)] = 750.0
        # ribs: bands a fixed depth inside the body contour, repeating every 26 mm, sloping forwards
        depth = (1 - np.sqrt(np.clip(inner, 0, None))) * 120
        phase = np.mod(zk + 18 * np.sin(angle) + 11, 26.0)
        rib = (np.hypot(depth - 6.0, np.minimum(phase, 26 - phase) * 1.0) < 5.0) & (np.abs(x[0]) > 30) & (zk > diaphragm - 20)
        hu[k][rib] = 450.0
    lung &= ~(np.abs(x) < 18)
    texture = ndimage.zoom(rng.standard_normal((nz // 10 + 2, 54, 54)).astype(np.float32),
                           (nz / (nz // 10 + 2), MATRIX / 54, MATRIX / 54), order=1)[:nz, :MATRIX, :MATRIX]
    parenchyma = -860 + 18 * texture + 0.25 * y
    hu[lung] = parenchyma[lung]
    return hu, lung


def _sweep_sphere(frac, spacing, origin_zyx, pts, radii) -> None:
    """Max-combine into `frac` the fraction of spheres of the given radii (mm) at points (mm, zyx)."""
    for p, r in zip(pts, radii):
        lo = np.maximum(np.floor((p - r - 1.5 - origin_zyx) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((p + r + 1.5 - origin_zyx) / spacing).astype(int) + 1, frac.shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = (origin_zyx[a] + spacing[a] * np.arange(lo[a], hi[a]) for a in range(3))
        d = np.sqrt((zz[:, None, None] - p[0]) ** 2 + (yy[None, :, None] - p[1]) ** 2 + (xx[None, None, :] - p[2]) ** 2)
        np.maximum(frac[box], np.clip((r - d) / spacing[1] + 0.5, 0, 1).astype(np.float32), out=frac[box])


def _bezier(p0, p1, p2, p3, n):
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def _vessels(rng, hu, lung, spacing, origin):
    frac = np.zeros(hu.shape, np.float32)
    idx = np.argwhere(lung[::6, ::12, ::12]) * np.array([6, 12, 12])
    for cx in (-45.0, 45.0):
        hilum = np.array([-10.0, 0.0, cx])
        trunks = [(hilum, rng.uniform(3.5, 5.0), 0) for _ in range(8)]
        while trunks:
            start, r0, depth = trunks.pop()
            target = origin + idx[int(rng.integers(len(idx)))] * spacing
            while (target[2] - cx) * np.sign(cx) < -20:  # a point of this lung
                target = origin + idx[int(rng.integers(len(idx)))] * spacing
            mid = start + (target - start) * rng.uniform(0.2, 0.5, 3)
            mid2 = start + (target - start) * rng.uniform(0.5, 0.8, 3) + rng.normal(0, 8, 3)
            length = float(np.linalg.norm(target - start))
            n = max(4, int(length / max(0.6, r0 * 0.5)))
            pts = _bezier(start, mid, mid2, target, n)
            radii = np.linspace(r0, max(0.8, r0 * 0.45), n)
            _sweep_sphere(frac, spacing, origin, pts, radii)
            if depth < 3:
                for _ in range(int(rng.integers(2, 4))):
                    t = int(rng.integers(n // 4, 3 * n // 4))
                    trunks.append((pts[t], max(0.8, radii[t] * rng.uniform(0.6, 0.8)), depth + 1))
    frac *= lung
    hu += frac * (42.0 - hu)


def _feret_axial(mask: np.ndarray, pixel: float) -> float:
    """Largest axial Feret diameter (mm) of a voxel-centre mask, plus one pixel for the voxel extent."""
    directions = np.stack([np.cos(a := np.linspace(0, np.pi, 180, endpoint=False)), np.sin(a)], 1)
    best = 0.0
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        proj = np.argwhere(mask[k]).astype(np.float32) @ directions.T
        best = max(best, float((proj.max(0) - proj.min(0)).max()))
    return best * pixel + pixel


def make_heldout_ct(seed: int, n_nodules: int | None = None) -> HeldoutChest:
    """A held-out chest CT; the same seed gives the same volume and truth."""
    rng = np.random.default_rng([seed, 0x4E1D])
    thickness = float(rng.choice([1.0, 1.25, 1.5]))
    nz = int(COVERAGE_MM / thickness)
    spacing = np.array([thickness, PIXEL_MM, PIXEL_MM])
    origin = np.array([-(nz - 1) / 2 * thickness, -(MATRIX - 1) / 2 * PIXEL_MM, -(MATRIX - 1) / 2 * PIXEL_MM])
    z, y, x = (origin[a] + spacing[a] * np.arange(n) for a, n in enumerate((nz, MATRIX, MATRIX)))
    z, y, x = z[:, None, None].astype(np.float32), y[None, :, None].astype(np.float32), x[None, None, :].astype(np.float32)
    hu, lung = _anatomy(rng, z, y, x)
    _vessels(rng, hu, lung, spacing, origin)
    depth_in_lung = ndimage.distance_transform_edt(lung, sampling=spacing)
    count = int(rng.integers(1, 5)) if n_nodules is None else n_nodules
    truths, placed = [], []
    crossing = np.zeros(hu.shape, np.float32)
    crossing_allowed = lung.copy()
    for index in range(1, count + 1):
        long_axis = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))
        kind = str(rng.choice(["solid", "ground-glass", "part-solid"], p=[0.45, 0.3, 0.25]))
        if kind == "part-solid" and long_axis < 8:
            kind = "ground-glass"
        shape = "sphere" if rng.random() < 0.4 else "ellipsoid"
        contact = str(rng.choice(["free", "juxtapleural", "vessel-crossing"], p=[0.55, 0.15, 0.3]))
        semi = long_axis / 2
        axes = np.array([semi, semi, semi]) if shape == "sphere" else semi * np.array([1.0, rng.uniform(0.5, 1), rng.uniform(0.5, 1)])
        want = (depth_in_lung > semi + 2) if contact != "juxtapleural" else (np.abs(depth_in_lung - semi * 0.8) < 1.0)
        cand = np.argwhere(want[::2, ::4, ::4]) * np.array([2, 4, 4])
        rng.shuffle(cand)
        centre = None
        for c in cand[:500]:
            cm = origin + c * spacing
            if all(np.linalg.norm(cm - pc) > semi + pr + 12 for pc, pr in placed):
                centre = cm
                break
        if centre is None:
            continue
        placed.append((centre, semi))
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        rot = q * np.sign(np.diag(r))
        lo = np.maximum(np.floor((centre - semi - 2 - origin) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((centre + semi + 2 - origin) / spacing).astype(int) + 1, hu.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = np.meshgrid(*[origin[a] + spacing[a] * np.arange(lo[a], hi[a]) - centre[a] for a in range(3)], indexing="ij")
        local = np.stack([zz, yy, xx], -1) @ rot
        rho = np.sqrt(((local / axes) ** 2).sum(-1))
        truth_mask = rho <= 1.0
        frac = np.clip((1 - rho) * axes.min() / PIXEL_MM + 0.5, 0, 1).astype(np.float32)
        value = rng.uniform(15, 55) if kind == "solid" else rng.uniform(-650, -450)
        sub = hu[box]
        sub += frac * (value + rng.normal(0, 20, frac.shape) - sub)
        if kind == "part-solid":
            core = np.clip((rng.uniform(0.4, 0.6) - rho) * axes.min() / PIXEL_MM + 0.5, 0, 1).astype(np.float32)
            sub += core * (rng.uniform(15, 50) - sub)
        if contact == "vessel-crossing":
            d = rng.standard_normal(3)
            d /= np.linalg.norm(d)
            offset = rng.uniform(-0.4, 0.4) * axes.min()
            perp = np.cross(d, rng.standard_normal(3))
            perp = perp / np.linalg.norm(perp) * offset
            pts = centre + perp + np.linspace(-semi - 15, semi + 15, int((2 * semi + 30) / 0.7))[:, None] * d
            _sweep_sphere(crossing, spacing, origin, pts, np.full(len(pts), rng.uniform(1.2, 2.5)))
            crossing_allowed[box] = True
        zyx_vox = tuple(float(v) for v in (centre - origin) / spacing)
        truths.append(HeldoutNodule(
            index=index, centre_zyx_vox=zyx_vox, centre_xyz_mm=(float(centre[2]), float(centre[1]), float(centre[0])),
            diameter_mm=round(_feret_axial(truth_mask, PIXEL_MM), 2),
            volume_mm3=round(float(truth_mask.sum()) * float(np.prod(spacing)), 2),
            nodule_type=kind, shape=shape, contact=contact))
    crossing *= crossing_allowed
    hu = np.maximum(hu, hu + crossing * (42.0 - hu))  # over the nodule, never darkening it
    hu = ndimage.gaussian_filter(hu, (0.4, rng.uniform(0.7, 1.3), 0), truncate=3.0)
    hu = ndimage.gaussian_filter1d(hu, rng.uniform(0.7, 1.3), axis=2, truncate=3.0)
    hu += rng.uniform(15, 35) * rng.standard_normal(hu.shape, dtype=np.float32)
    return HeldoutChest(hu=np.clip(np.rint(hu), -1024, 3071).astype(np.int16), spacing_zyx_mm=tuple(float(s) for s in spacing),
                        origin_xyz_mm=(float(origin[2]), float(origin[1]), float(origin[0])), nodules=tuple(truths))
