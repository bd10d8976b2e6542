"""Training patches for the lung nodule network, drawn for breadth rather than one shape.

Each patch is 96 mm of lung at 1 mm, rendered, blurred and noised as a scanner would, then
sampled onto the model's 2 mm grid exactly as the runtime does
(`integrations.inference.lung_nodules.resample_to_spacing`). Content, all random per seed:

- parenchyma (-900 to -780 HU, low-frequency texture), sometimes a chest wall or mediastinal
  surface at any angle (fat, muscle, ribs with cortex) or a diaphragm/heart dome;
- tapering, branching vessels (0.5-4.5 mm radius; 10 % contrast-enhanced), crossing and
  touching nodules;
- 0-2 nodules of 3-40 mm long axis (masses included): ellipsoids of any orientation (axis
  ratios 0.5-1), lobulated (union of lobes), bumpy (radially perturbed) and spiculated;
  solid, ground-glass, part-solid and calcified; free, juxtapleural or juxtavascular;
- reconstruction kernel 0.3-1.1 mm, slice thickness 0.6-2.5 mm, noise 8-60 HU (dose).

Truth: the target is the nodule body (drawn fraction > 0.5, spicules excluded) on the 2 mm grid,
plus a 2 mm ball at each centre so that a 3 mm nodule still has a positive voxel. Used only for
training (`train_detector.py`); the held-out evaluation uses `heldout_phantoms.py`, written
separately with another shape model.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from integrations.inference.lung_nodules import resample_to_spacing

PATCH_MM = 96  # 1 mm voxels; 48 voxels on the 2 mm grid
MODEL_MM = 2.0
# Seeds from here on also draw a dense field of small peripheral vessels: trained on sparse
# vessels only, the first network suppressed nodules standing among dense vessel trees.
DENSE_VESSELS_FROM_SEED = 1600


def _axes(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.arange(n, dtype=np.float32) - (n - 1) / 2.0
    return c[:, None, None], c[None, :, None], c[None, None, :]


def _smooth_noise(rng, n: int, cell: int) -> np.ndarray:
    coarse = rng.standard_normal((n // cell + 2,) * 3).astype(np.float32)
    return ndimage.zoom(coarse, (n / coarse.shape[0],) * 3, order=1)[:n, :n, :n]


def _unit(rng) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _tube(p, a, b, r0, r1) -> np.ndarray:
    """Signed depth (mm, positive inside) of a tapered tube from a to b."""
    z, y, x = p
    d = b - a
    t = np.clip(((z - a[0]) * d[0] + (y - a[1]) * d[1] + (x - a[2]) * d[2]) / float(d @ d + 1e-6), 0, 1)
    dist = np.sqrt((z - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (x - a[2] - t * d[2]) ** 2)
    return r0 + t * (r1 - r0) - dist


def _fraction(depth: np.ndarray) -> np.ndarray:
    return np.clip(depth + 0.5, 0.0, 1.0)


def _paint(hu, frac, value) -> None:
    hu += frac * (value - hu)


def _surface(rng, p, hu, lung) -> tuple[np.ndarray, np.ndarray] | None:
    """A chest wall / mediastinum (plane) or dome (sphere) surface; returns (normal, point) or None."""
    kind = rng.choice(["none", "wall", "dome"], p=[0.45, 0.4, 0.15])
    if kind == "none":
        return None
    z, y, x = p
    n = _unit(rng)
    offset = rng.uniform(5, 40)
    if kind == "wall":
        s = n[0] * z + n[1] * y + n[2] * x - offset  # > 0: outside the lung
    else:
        radius = rng.uniform(50, 120)
        c = n * (offset + radius)
        s = radius - np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    tissue = _fraction(s)
    _paint(hu, tissue, rng.uniform(20, 60))
    if kind == "wall":
        _paint(hu, _fraction(s) * _fraction(rng.uniform(2, 6) - s), rng.uniform(-120, -60))  # fat under the pleura
        u = np.cross(n, _unit(rng))
        u /= np.linalg.norm(u)
        v = np.cross(n, u)
        for k in range(int(rng.integers(0, 4))):  # ribs: bone cylinders in the wall
            depth = rng.uniform(4, 14)
            centre = n * (offset + depth) + v * rng.uniform(-45, 45)
            radius = rng.uniform(4, 8)
            bone = _fraction(_tube(p, centre - u * 120, centre + u * 120, radius, radius))
            _paint(hu, bone, rng.uniform(300, 500))
            _paint(hu, bone * _fraction(1.5 - _tube(p, centre - u * 120, centre + u * 120, radius, radius)),
                   rng.uniform(700, 1100))
    lung &= s < 0
    return n, offset


def _vessels(rng, p, hu, n: int) -> list[tuple[np.ndarray, float]]:
    """Branching tapering vessels; returns sample axis points with radius (for juxtavascular nodules)."""
    half = PATCH_MM / 2.0
    points = []
    for _ in range(n):
        a = rng.uniform(-half, half, 3)
        d = _unit(rng)
        r = float(rng.uniform(0.5, 4.5) if rng.random() < 0.8 else rng.uniform(0.5, 1.5))
        value = rng.uniform(20, 60) if rng.random() > 0.1 else rng.uniform(150, 300)
        stack = [(a - d * 40, d, r)]
        while stack:
            a, d, r = stack.pop()
            length = rng.uniform(15, 50)
            b = a + d * length
            r1 = max(0.4, r * rng.uniform(0.75, 0.95))
            _paint(hu, _fraction(_tube(p, a, b, r, r1)), value)
            points += [(a + t * (b - a), r + t * (r1 - r)) for t in (0.3, 0.6, 0.9)]
            if r1 > 0.8 and len(points) < 60 and rng.random() < 0.7:
                for _ in range(2):
                    nd = d + rng.uniform(0.3, 0.9) * _unit(rng)
                    stack.append((b, nd / np.linalg.norm(nd), r1 * rng.uniform(0.6, 0.9)))
    return [(pt, r) for pt, r in points if np.all(np.abs(pt) < half - 4)]


def _small_vessels(rng, p, hu) -> None:
    """150-300 short straight vessel segments of 0.5-1.5 mm radius at random (peripheral vessel trees)."""
    n = PATCH_MM
    half = n / 2.0
    frac = np.zeros(hu.shape, np.float32)
    for _ in range(int(rng.integers(150, 301))):
        a = rng.uniform(-half, half, 3)
        b = a + _unit(rng) * rng.uniform(8, 30)
        r = rng.uniform(0.5, 1.5)
        lo = np.clip(np.floor(np.minimum(a, b) - r - 2 + half), 0, n).astype(int)
        hi = np.clip(np.ceil(np.maximum(a, b) + r + 2 + half), 0, n).astype(int)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(i, j) for i, j in zip(lo, hi))
        sub = (p[0][box[0]], p[1][:, box[1]], p[2][:, :, box[2]])
        np.maximum(frac[box], _fraction(_tube(sub, a, b, r, r * rng.uniform(0.6, 1.0))), out=frac[box])
    _paint(hu, frac * (hu < -300), rng.uniform(20, 60))


def _nodule_depth(rng, p, centre, long_axis_mm) -> np.ndarray:
    """Signed depth (mm) of one nodule body of the given long axis: ellipsoid, lobulated or bumpy."""
    shape = rng.choice(["ellipsoid", "lobulated", "bumpy"], p=[0.55, 0.25, 0.2])
    z, y, x = (p[0] - centre[0], p[1] - centre[1], p[2] - centre[2])
    semi = long_axis_mm / 2.0
    if shape == "lobulated":
        depth = np.full((PATCH_MM,) * 3, -1e3, np.float32)
        for _ in range(int(rng.integers(2, 6))):
            r = semi * rng.uniform(0.45, 0.75)
            c = _unit(rng) * (semi - r) * rng.uniform(0.5, 1.0)
            np.maximum(depth, r - np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2), out=depth)
        return depth
    axes = semi * np.array([1.0, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)])
    rot = _rotation(rng)
    q = [rot[0, i] * z + rot[1, i] * y + rot[2, i] * x for i in range(3)]
    rho = np.sqrt(sum((qi / ai) ** 2 for qi, ai in zip(q, axes)))
    radius = axes.min()
    if shape == "bumpy":
        bumps = sum(rng.uniform(0.05, 0.15) * np.cos(rng.integers(2, 6) * np.arccos(np.clip(
            (q[0] * u[0] + q[1] * u[1] + q[2] * u[2]) / (np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) + 1e-3), -1, 1)))
            for u in (_unit(rng) for _ in range(3)))
        rho = rho / (1.0 + bumps)
    return ((1.0 - rho) * radius).astype(np.float32)


def _draw_nodule(rng, p, hu, lung, centre, long_axis_mm) -> np.ndarray:
    """Draw a nodule; return its body fraction (spicules excluded)."""
    depth = _nodule_depth(rng, p, centre, long_axis_mm)
    body = _fraction(depth)
    kind = rng.choice(["solid", "ground-glass", "part-solid", "calcified"], p=[0.45, 0.25, 0.2, 0.1])
    texture = rng.normal(0, 15, hu.shape).astype(np.float32) if kind != "ground-glass" else 0
    if kind == "ground-glass" or kind == "part-solid":
        glass = rng.uniform(-750, -400)
        # ground glass does not hide vessels: blend under them (keep the denser value)
        hu[:] = np.maximum(hu, hu + body * (glass + 30 * rng.standard_normal(hu.shape) - hu))
        if kind == "part-solid":
            core = _fraction(depth - long_axis_mm / 2.0 * rng.uniform(0.3, 0.7))
            _paint(hu, core, rng.uniform(0, 60))
    else:
        _paint(hu, body, rng.uniform(-10, 70) + texture)
        if kind == "calcified":
            calc = _fraction(depth - long_axis_mm / 2.0 * rng.uniform(0.0, 0.8))
            _paint(hu, calc, rng.uniform(250, 1000))
    if kind != "ground-glass" and long_axis_mm >= 8 and rng.random() < 0.35:  # spicules
        for _ in range(int(rng.integers(5, 14))):
            d = _unit(rng)
            a = centre + d * long_axis_mm * 0.35
            b = a + d * long_axis_mm * rng.uniform(0.3, 0.8)
            _paint(hu, _fraction(_tube(p, a, b, 0.7, 0.3)) * lung, rng.uniform(-80, 20))
    return body


def make_patch(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(HU patch on the 2 mm grid float32 [48]^3, target uint8 [48]^3, number of nodules)."""
    rng = np.random.default_rng([seed, 0xB7EAD])
    n = PATCH_MM
    p = _axes(n)
    hu = (rng.uniform(-900, -780) + 30 * _smooth_noise(rng, n, 12)
          + rng.uniform(-0.4, 0.4) * p[int(rng.integers(0, 3))]).astype(np.float32)
    lung = np.ones(hu.shape, bool)
    surface = _surface(rng, p, hu, lung)
    vessel_points = _vessels(rng, p, hu, int(rng.integers(2, 9)))
    if seed >= DENSE_VESSELS_FROM_SEED:
        _small_vessels(np.random.default_rng([seed, 0xDE5E]), p, hu)
    label = np.zeros(hu.shape, bool)
    centres = []
    for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
        long_axis = float(np.exp(rng.uniform(np.log(3.0), np.log(40.0))))
        semi = long_axis / 2.0
        where = rng.choice(["free", "pleural", "vascular"], p=[0.5, 0.25, 0.25])
        centre = rng.uniform(-(n / 2 - semi - 3), n / 2 - semi - 3, 3) if semi < n / 2 - 4 else np.zeros(3)
        if where == "pleural" and surface is not None and surface[1] < 40:
            normal, offset = surface
            centre = centre - normal * (centre @ normal) + normal * (offset - semi * rng.uniform(0.5, 1.0))
        elif where == "vascular" and vessel_points:
            pt, r = vessel_points[int(rng.integers(len(vessel_points)))]
            centre = pt + _unit(rng) * (semi + r) * rng.uniform(0.6, 1.0)
        if any(np.linalg.norm(centre - c) < semi + s + 3 for c, s in centres):
            continue
        centres.append((centre, semi))
        body = _draw_nodule(rng, p, hu, lung, centre, long_axis)
        label |= body > 0.5
        label |= (p[0] - centre[0]) ** 2 + (p[1] - centre[1]) ** 2 + (p[2] - centre[2]) ** 2 <= 4.0
    # Scanner: kernel and slice thickness (Gaussian PSF), then quantum noise.
    kernel = rng.uniform(0.3, 1.1)
    thickness = rng.uniform(0.6, 2.5)
    hu = ndimage.gaussian_filter(hu, (max(kernel, thickness / 2.355), kernel, kernel))
    noise = rng.standard_normal(hu.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, 0.6) * 2.2
    hu += rng.uniform(8, 60) * noise
    coarse = resample_to_spacing(hu, (1.0, 1.0, 1.0), MODEL_MM)
    target = label[::2, ::2, ::2].astype(np.uint8)
    return coarse.astype(np.float32), target, len(centres)
