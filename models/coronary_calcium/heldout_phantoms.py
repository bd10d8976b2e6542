"""Held-out calcium-scoring CTs with the distractors that fool a threshold: never used to set a rule.

Written separately from `radpath/synth/cardiac_ct.py` (another anatomy, another drawing
method), so that the candidate rules in `pathways/coronary_candidates.py` are measured on
studies they were not written against:

- 512 x 512 over a 180-240 mm cardiac field centred near the heart, 2.5 or 3.0 mm slices,
  each slice the mean of three planes across its thickness (partial volume);
- body and lungs are superellipses; the heart is a rotated ellipsoid (long axis to the left,
  front and feet) wrapped in epicardial fat 3-9 mm thick; an ascending aorta rises from its
  base in a fat sleeve; descending aorta, vertebral body, sternum, and ribs as swept tubes that
  circle the chest wall and slope to the feet (the field cuts them, leaving rib ends at its edge);
- coronary arteries are soft-tissue tubes (1.4-2 mm radius) in groove fat (1.5-3.5 mm around
  the vessel, as the atrioventricular and interventricular grooves are fat-filled): LM from
  the aortic root, LAD in the anterior interventricular groove, LCx and RCA in the left and
  right atrioventricular grooves; plaques are ellipsoids on the vessel wall, long along it,
  peak 140-950 HU, drawn at 3x sampling;
- distractors: a rib end cut by the field edge, costal cartilage calcification in the chest
  wall, aortic valve calcification at the root, mitral annulus calcification (an arc of the
  annulus ring deep in the base), and coronary stents (hollow metal tubes 8-20 mm long,
  1,200-3,000 HU, struts drawn at 3x sampling);
- acquisition: 120 kVp; some studies at 100 kVp (calcium and bone read about 15 % higher) or
  with no KVP recorded; some contrast-enhanced (blood 250-420 HU); noise 12-24 HU.

Truth: per plaque, the Agatston score (Agatston 1990 rule, 130 HU, 1 mm^2, 3 mm reference) of
the noise-free image over the voxels that plaque was drawn into; the total over plaques; per
vessel; the CAC-DRS category; and per distractor its voxels, so the evaluation can tell whether
it was counted. A study at other than 120 kVp, with no KVP, or with contrast is expected to be
not measurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

MATRIX = 512
VESSELS = ("LM", "LAD", "LCx", "RCA")
DISTRACTORS = ("rib-end", "costal-cartilage", "aortic-valve", "mitral-annulus", "stent")


@dataclass(frozen=True)
class Plaque:
    vessel: str
    centre_xyz_mm: tuple[float, float, float]
    peak_hu: float
    agatston: float


@dataclass(frozen=True)
class Distractor:
    kind: str
    centre_xyz_mm: tuple[float, float, float]
    voxels: np.ndarray = field(repr=False)  # (n, 3) z, y, x indices it was drawn into (>= 130 HU noise-free)


@dataclass(frozen=True)
class HeldoutCardiacCT:
    seed: int
    hu: np.ndarray = field(repr=False)  # int16 (z, y, x)
    hu_noise_free: np.ndarray = field(repr=False)  # the same before noise: tells the rules' error from the noise's
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    kvp_values: tuple[float, ...]
    contrast: bool
    plaques: tuple[Plaque, ...]
    distractors: tuple[Distractor, ...]
    plaque_labels: np.ndarray = field(repr=False)  # uint8, plaque index + 1 where a plaque was drawn

    @property
    def expected_measurable(self) -> bool:
        return self.kvp_values == (120.0,) and not self.contrast

    @property
    def agatston_total(self) -> float:
        return float(sum(p.agatston for p in self.plaques))

    @property
    def agatston_by_vessel(self) -> dict[str, float]:
        return {v: float(sum(p.agatston for p in self.plaques if p.vessel == v)) for v in VESSELS}


def _weight(peak: float) -> int:
    return 4 if peak >= 400 else 3 if peak >= 300 else 2 if peak >= 200 else 1 if peak >= 130 else 0


class _Canvas:
    """The volume being drawn, with world (x, y, z mm) <-> index maps and local supersampled painting."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.fov = float(rng.uniform(180.0, 240.0))
        self.px = self.fov / MATRIX
        self.dz = float(rng.choice([2.5, 3.0]))
        self.nz = int(round(float(rng.uniform(120.0, 150.0)) / self.dz))
        self.centre = np.array([rng.uniform(5.0, 25.0), rng.uniform(-10.0, 10.0), 0.0])  # the field's centre (x, y, z)
        self.origin = np.array([self.centre[0] - (MATRIX - 1) / 2 * self.px,
                                self.centre[1] - (MATRIX - 1) / 2 * self.px,
                                -(self.nz - 1) / 2 * self.dz])
        self.hu = np.zeros((self.nz, MATRIX, MATRIX), np.float32)

    def axes(self, sub: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World z (slice planes, `sub` per slice across its thickness), y and x of the whole grid."""
        offsets = (np.arange(sub) - (sub - 1) / 2) / sub * self.dz
        z = (self.origin[2] + self.dz * np.arange(self.nz))[:, None] + offsets[None, :]
        y = self.origin[1] + self.px * np.arange(MATRIX)
        x = self.origin[0] + self.px * np.arange(MATRIX)
        return z.astype(np.float32), y.astype(np.float32), x.astype(np.float32)

    def box(self, lo_xyz: np.ndarray, hi_xyz: np.ndarray) -> tuple[slice, slice, slice] | None:
        lo = np.floor((lo_xyz - self.origin) / [self.px, self.px, self.dz]).astype(int) - 1
        hi = np.ceil((hi_xyz - self.origin) / [self.px, self.px, self.dz]).astype(int) + 2
        lo, hi = np.maximum(lo, 0), np.minimum(hi, [MATRIX, MATRIX, self.nz])
        if np.any(hi <= lo):
            return None
        return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])

    def paint(self, lo_xyz, hi_xyz, inside_value, sub: int = 3, support: bool = False) -> np.ndarray | bool:
        """Paint a small object given by `inside_value(x, y, z) -> (inside bool, value)` at `sub`x
        sampling in every axis. With `support`, returns the volume mask of the voxels it reached
        (False: the object lies outside the field); otherwise whether it reached any."""
        box = self.box(np.asarray(lo_xyz, float), np.asarray(hi_xyz, float))
        if box is None:
            return False
        k, j, i = (np.arange(s.start, s.stop) for s in box)
        off = (np.arange(sub) - (sub - 1) / 2) / sub
        z = (self.origin[2] + self.dz * (k[:, None] + off)).reshape(-1).astype(np.float32)
        y = (self.origin[1] + self.px * (j[:, None] + off)).reshape(-1).astype(np.float32)
        x = (self.origin[0] + self.px * (i[:, None] + off)).reshape(-1).astype(np.float32)
        inside, value = inside_value(x[None, None, :], y[None, :, None], z[:, None, None])
        shape = (len(k), sub, len(j), sub, len(i), sub)
        fraction = inside.astype(np.float32).reshape(shape).mean(axis=(1, 3, 5))
        mixed = np.where(inside, value, 0.0).astype(np.float32).reshape(shape).mean(axis=(1, 3, 5))
        self.hu[box] = self.hu[box] * (1 - fraction) + mixed
        if not support:
            return bool((fraction > 0).any())
        if not (fraction > 0).any():
            return False
        mask = np.zeros(self.hu.shape, bool)
        mask[box] = fraction > 0
        return mask

    def tube(self, points: np.ndarray, radius: float, value_at, sub: int = 1) -> None:
        """A swept sphere along a polyline, painted segment by segment (`value_at(distance)` HU)."""
        for p0, p1 in zip(points[:-1], points[1:]):
            def shape(xs, ys, zs, a=p0, b=p1):
                dist = _segment_distance(xs, ys, zs, a, b)[0]
                return dist < radius, value_at(dist)

            self.paint(np.minimum(p0, p1) - radius - 1, np.maximum(p0, p1) + radius + 1, shape, sub=sub)


def _superellipse(x, y, cx, cy, a, b, p):
    return (np.abs((x - cx) / a) ** p + np.abs((y - cy) / b) ** p) < 1.0


def _segment_distance(x, y, z, p0: np.ndarray, p1: np.ndarray):
    """Distance of points to the segment p0-p1 and the position t (0..1) along it."""
    d = p1 - p0
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / float(d @ d), 0.0, 1.0)
    return np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2), t


class _Heart:
    """A rotated ellipsoid; `surface(s, phi, out)` is a point `out` mm outside its surface at long-axis
    position s (-1 base .. 1 apex) and angle phi around the long axis (0 = anterior, 90 = patient left)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.centre = np.array([rng.uniform(8.0, 22.0), rng.uniform(-8.0, 4.0), rng.uniform(-20.0, -5.0)])
        self.semi = np.array([rng.uniform(50.0, 62.0), rng.uniform(38.0, 46.0), rng.uniform(36.0, 44.0)])  # long, 2 short
        az, el = np.radians(rng.uniform(30.0, 55.0)), np.radians(rng.uniform(20.0, 40.0))
        u = np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), -np.sin(el)])  # to left, front, feet
        anterior = np.array([0.0, -1.0, 0.0])
        v = anterior - (anterior @ u) * u
        v /= np.linalg.norm(v)
        w = np.cross(u, v)
        if w[0] < 0:  # w points to the patient's left
            w = -w
        self.u, self.v, self.w = u, v, w
        self.fat_mm = float(rng.uniform(3.0, 9.0))

    def local(self, x, y, z):
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        a = dx * self.u[0] + dy * self.u[1] + dz * self.u[2]
        b = dx * self.v[0] + dy * self.v[1] + dz * self.v[2]
        c = dx * self.w[0] + dy * self.w[1] + dz * self.w[2]
        return a, b, c

    def r2(self, x, y, z, grow_mm: float = 0.0):
        a, b, c = self.local(x, y, z)
        s = self.semi + grow_mm
        return (a / s[0]) ** 2 + (b / s[1]) ** 2 + (c / s[2]) ** 2

    def surface(self, s: float, phi_deg: float, out_mm: float) -> np.ndarray:
        phi = np.radians(phi_deg)
        ring = np.sqrt(max(1e-6, 1 - s * s))
        semi = self.semi + out_mm
        return self.centre + self.u * semi[0] * s + (self.v * semi[1] * np.cos(phi) + self.w * semi[2] * np.sin(phi)) * ring


def _vessel_paths(heart: _Heart, root_wall: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Polylines (n, 3) x, y, z mm in the epicardial fat for each coronary artery."""
    mid = heart.fat_mm / 2
    s_av = float(rng.uniform(-0.72, -0.6))
    bif = heart.surface(s_av - 0.08, 15.0, mid)
    paths = {"LM": np.linspace(root_wall, bif, 8)}
    paths["LAD"] = np.array([heart.surface(s, 10.0 + 12.0 * (s - s_av), mid) for s in np.linspace(s_av, 0.92, 40)])
    paths["LCx"] = np.array([heart.surface(s_av, phi, mid) for phi in np.linspace(40.0, 170.0, 40)])
    paths["RCA"] = np.array([heart.surface(s_av, phi, mid) for phi in np.linspace(-25.0, -190.0, 50)])
    return paths


def _point_on(path: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))]
    at = t * lengths[-1]
    k = int(np.clip(np.searchsorted(lengths, at) - 1, 0, len(path) - 2))
    f = (at - lengths[k]) / max(lengths[k + 1] - lengths[k], 1e-6)
    direction = path[k + 1] - path[k]
    return path[k] + f * direction, direction / np.linalg.norm(direction)


def _perpendicular(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    other = rng.standard_normal(3)
    other -= (other @ direction) * direction
    return other / np.linalg.norm(other)


def make_heldout_cardiac_ct(seed: int) -> HeldoutCardiacCT:
    """One held-out study; the same seed gives the same volume and truth."""
    rng = np.random.default_rng([seed, 0xCAC2])
    canvas = _Canvas(rng)
    kvp_draw, contrast = rng.uniform(), bool(rng.uniform() < 0.08)
    kvp: tuple[float, ...] = (100.0,) if kvp_draw < 0.08 else () if kvp_draw < 0.12 else (120.0,)
    bone_gain = 1.15 if kvp == (100.0,) else 1.0
    blood = float(rng.uniform(250.0, 420.0)) if contrast else float(rng.uniform(35.0, 50.0))
    heart = _Heart(rng)

    z3, y, x = canvas.axes(sub=1)
    z = z3[:, 0][:, None, None]
    yy, xx = y[None, :, None], x[None, None, :]
    hu = canvas.hu
    body_a, body_b = rng.uniform(150.0, 180.0), rng.uniform(105.0, 125.0)
    body = _superellipse(xx, yy, 0.0, 5.0, body_a, body_b, 2.4)[0]
    inner = _superellipse(xx, yy, 0.0, 5.0, body_a - 14, body_b - 12, 2.4)[0]
    hu[:] = np.where(body, np.where(inner, 45.0, -95.0), -1000.0)
    lung_b, left_a, right_a = rng.uniform(75.0, 90.0), rng.uniform(40.0, 48.0), rng.uniform(42.0, 50.0)
    for kz in range(canvas.nz):  # the lungs narrow a little towards the apices
        scale = 1.0 - 0.25 * kz / max(canvas.nz - 1, 1)
        lungs = _superellipse(xx[0], yy[0], -60.0, 0.0, right_a * scale, lung_b, 2.6) \
            | _superellipse(xx[0], yy[0], 62.0, 0.0, left_a * scale, lung_b, 2.6)
        hu[kz][lungs] = -850.0

    # Heart, epicardial fat, aorta (ascending in a fat sleeve, descending), spine, sternum
    r2_fat = heart.r2(xx, yy, z, heart.fat_mm)
    r2_heart = heart.r2(xx, yy, z)
    hu[r2_fat < 1.0] = -100.0
    hu[r2_heart < 1.0] = 45.0
    hu[heart.r2(xx, yy, z, -9.0) < 1.0] = blood  # the chambers' blood inside the myocardium
    base = heart.centre - heart.u * heart.semi[0] * 0.55
    right = np.cross(heart.u, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right) * (1 if right[0] < 0 else -1)
    root = base + right * rng.uniform(4.0, 9.0) - heart.u * 4.0
    root_r = float(rng.uniform(12.0, 15.0))
    above = z >= root[2]
    ring = np.hypot(xx - root[0], yy - root[1])
    hu[np.broadcast_to(above & (ring < root_r + 4.0), hu.shape)] = -100.0
    hu[np.broadcast_to(above & (ring < root_r + 1.5), hu.shape)] = 45.0
    hu[np.broadcast_to(above & (ring < root_r), hu.shape)] = blood
    desc = np.hypot(xx - rng.uniform(20.0, 30.0), yy - rng.uniform(52.0, 60.0))[0]
    hu[:, desc < 12.5] = 45.0
    hu[:, desc < 11.0] = blood
    spine = np.hypot(xx - 0.0, yy - rng.uniform(75.0, 82.0))[0]
    hu[:, spine < 18.0] = 850.0 * bone_gain
    hu[:, spine < 15.5] = 260.0 * bone_gain
    sternum_y = 5.0 - body_b + 16.0
    hu[:, (np.abs(xx[0]) < 13) & (np.abs(yy[0] - sternum_y) < 5)] = 500.0 * bone_gain

    # Ribs: tubes round the chest wall, each sloping 32 mm to the feet from back to front
    for rib_z in np.arange(canvas.origin[2] - 20.0, canvas.origin[2] + canvas.nz * canvas.dz + 40.0, 24.0):
        for side in (-1.0, 1.0):
            theta = np.linspace(np.radians(15.0), np.radians(160.0), 24)
            points = np.column_stack([side * (body_a - 20.0) * np.sin(theta) * 0.98,
                                      5.0 + (body_b - 18.0) * np.cos(theta),
                                      rib_z - 32.0 * (1 - (theta - theta[0]) / np.ptp(theta))])
            canvas.tube(points, 4.5, lambda d: np.where(d < 3.0, 300.0, 750.0) * bone_gain)

    # Coronary arteries: soft-tissue tubes in the fat; the LM leaves the aortic root's left wall
    left = -right
    root_wall = root + left * (root_r + 1.0) + np.array([0.0, 0.0, rng.uniform(8.0, 14.0)])
    paths = _vessel_paths(heart, root_wall, rng)
    vessel_r = {v: float(rng.uniform(1.4, 2.0)) for v in VESSELS}
    groove_mm = float(rng.uniform(1.5, 3.5))  # the fat of the groove around each artery, however thin the layer
    for vessel, path in paths.items():
        canvas.tube(path, vessel_r[vessel] + groove_mm, lambda d: np.full(d.shape, -100.0, np.float32))
    for vessel, path in paths.items():
        canvas.tube(path, vessel_r[vessel], lambda d: np.full(d.shape, blood, np.float32))

    truth_support = np.zeros(hu.shape, np.uint8)
    plaque_rows: list[tuple[str, np.ndarray, float, np.ndarray]] = []
    used: list[np.ndarray] = []
    n_plaques = int(rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 8]))
    for _ in range(n_plaques):
        for _attempt in range(30):
            vessel = str(rng.choice(VESSELS, p=[0.1, 0.4, 0.2, 0.3]))
            centre, direction = _point_on(paths[vessel], float(rng.uniform(0.05, 0.9)))
            centre = centre + _perpendicular(direction, rng) * vessel_r[vessel] * 0.6
            inside_field = np.all(np.abs(centre[:2] - canvas.centre[:2]) < canvas.fov / 2 - 12)
            if inside_field and all(np.linalg.norm(centre - c) > 10.0 for c in used):
                break
        else:
            continue
        used.append(centre)
        along, across = float(rng.uniform(1.0, 4.0)), float(rng.uniform(0.6, 1.6))
        peak = float(rng.uniform(140.0, 950.0)) * bone_gain
        side = _perpendicular(direction, rng)
        third = np.cross(direction, side)

        def plaque(xs, ys, zs, c=centre, d=direction, s=side, t=third, al=along, ac=across, pk=peak):
            rx, ry, rz = xs - c[0], ys - c[1], zs - c[2]
            a = rx * d[0] + ry * d[1] + rz * d[2]
            b = rx * s[0] + ry * s[1] + rz * s[2]
            e = rx * t[0] + ry * t[1] + rz * t[2]
            r2 = (a / al) ** 2 + (b / ac) ** 2 + (e / ac) ** 2
            return r2 <= 1.0, 135.0 + (pk - 135.0) * (1.0 - r2)

        reach = along + 1.0
        drawn = canvas.paint(centre - reach, centre + reach, plaque, support=True)
        if drawn is not False:
            plaque_rows.append((vessel, centre, peak, drawn))

    distractors: list[tuple[str, np.ndarray, np.ndarray]] = []
    kinds = [k for k in DISTRACTORS if rng.uniform() < 0.35]
    for kind in kinds:
        made = _distractor(kind, canvas, heart, root, root_r, paths, vessel_r, rng, bone_gain, sternum_y, used)
        if made is not None:
            distractors.append(made)

    noise_image = rng.normal(0.0, float(rng.uniform(12.0, 24.0)), hu.shape).astype(np.float32)
    clean = hu.copy()
    for index, (vessel, centre, peak, support) in enumerate(plaque_rows, start=1):
        truth_support[support] = index
    plaques = tuple(
        Plaque(vessel=vessel, centre_xyz_mm=tuple(float(v) for v in centre), peak_hu=round(peak, 1),
               agatston=_agatston(clean, truth_support == index, canvas))
        for index, (vessel, centre, peak, _) in enumerate(plaque_rows, start=1)
    )
    drawn = np.zeros(hu.shape, bool)
    for _, _, mask in distractors:
        drawn |= mask
    found = tuple(Distractor(kind, tuple(float(v) for v in c), np.argwhere(m & (clean >= 130))) for kind, c, m in distractors)
    found += tuple(Distractor("rib-end", c, voxels) for c, voxels in _rib_ends_in_field(clean, canvas, drawn))
    out = np.clip(np.rint(clean + noise_image), -1024, 3071).astype(np.int16)
    return HeldoutCardiacCT(seed=seed, hu=out, hu_noise_free=np.clip(np.rint(clean), -1024, 3071).astype(np.int16),
                            spacing_zyx_mm=(canvas.dz, canvas.px, canvas.px),
                            origin_xyz_mm=tuple(float(v) for v in canvas.origin), kvp_values=kvp, contrast=contrast,
                            plaques=plaques, distractors=found, plaque_labels=truth_support)


def _agatston(clean: np.ndarray, support: np.ndarray, canvas: _Canvas) -> float:
    """Agatston 1990 over one plaque's voxels of the noise-free image, scaled to 3 mm."""
    area_px = canvas.px * canvas.px
    score = 0.0
    for k in np.nonzero(support.any(axis=(1, 2)))[0]:
        above = support[k] & (clean[k] >= 130.0)
        labels, count = ndimage.label(above, structure=np.ones((3, 3)))
        for n in range(1, count + 1):
            pixels = clean[k][labels == n]
            if pixels.size * area_px >= 1.0:
                score += pixels.size * area_px * _weight(float(pixels.max()))
    return round(score * canvas.dz / 3.0, 3)


def _rib_ends_in_field(clean: np.ndarray, canvas: _Canvas, drawn: np.ndarray) -> list[tuple[tuple[float, float, float], np.ndarray]]:
    """Pieces of the anatomy's ribs that the field's edge leaves small enough to pass for a lesion
    (<= 3,000 mm^3); the distractors drawn on purpose (`drawn`) are listed already."""
    labels, count = ndimage.label(clean >= 130.0)
    voxel = canvas.px * canvas.px * canvas.dz
    out = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        touches = box[1].start == 0 or box[2].start == 0 or box[1].stop == MATRIX or box[2].stop == MATRIX
        size = int((labels[box] == k).sum())
        if touches and size * voxel <= 3000.0 and not drawn[box][labels[box] == k].any():
            idx = np.argwhere(labels == k)
            centre = canvas.origin + idx.mean(axis=0)[::-1] * [canvas.px, canvas.px, canvas.dz]
            out.append((tuple(float(v) for v in centre), idx))
    return out


def _distractor(kind, canvas, heart, root, root_r, paths, vessel_r, rng, gain, sternum_y, plaque_centres):
    """Draw one distractor of `kind`; (kind, centre xyz, support mask) or None when it fell outside."""
    if kind == "rib-end":  # a piece of rib crossing the field's edge, as a cardiac field cuts it
        edge_x = canvas.centre[0] + rng.choice([-1.0, 1.0]) * canvas.fov / 2
        c = np.array([edge_x, canvas.centre[1] + rng.uniform(-30.0, 40.0), rng.uniform(-30.0, 30.0)])
        length, r = rng.uniform(10.0, 22.0), rng.uniform(3.5, 5.0)
        d = np.array([np.sign(edge_x - canvas.centre[0]), rng.uniform(-0.5, 0.5), rng.uniform(-0.6, -0.2)])
        d /= np.linalg.norm(d)
        p0, p1 = c - d * length / 2, c + d * length / 2

        def shape(xs, ys, zs):
            dist = _segment_distance(xs, ys, zs, p0, p1)[0]
            return dist < r, np.where(dist < r - 1.2, 320.0, 800.0) * gain

        lo, hi = np.minimum(p0, p1) - r - 1, np.maximum(p0, p1) + r + 1
        sub = 1
    elif kind == "costal-cartilage":  # calcified cartilage beside the sternum, in the chest wall
        c = np.array([rng.choice([-1.0, 1.0]) * rng.uniform(22.0, 40.0), sternum_y + rng.uniform(-3.0, 6.0),
                      rng.uniform(-25.0, 25.0)])
        semi = rng.uniform([2.0, 1.5, 1.5], [5.0, 3.0, 3.0])
        peak = rng.uniform(250.0, 700.0) * gain

        def shape(xs, ys, zs):
            r2 = ((xs - c[0]) / semi[0]) ** 2 + ((ys - c[1]) / semi[1]) ** 2 + ((zs - c[2]) / semi[2]) ** 2
            return r2 <= 1, 140 + (peak - 140) * (1 - r2)

        lo, hi, sub = c - semi - 1, c + semi + 1, 3
    elif kind == "aortic-valve":  # nodular calcium on the cusps, inside the root at the valve plane
        angle = rng.uniform(0, 2 * np.pi)
        radial = rng.uniform(0.3, 0.75) * root_r
        c = root + np.array([np.cos(angle) * radial, np.sin(angle) * radial, rng.uniform(0.0, 3.0)])
        semi = rng.uniform([1.5, 1.5, 1.0], [4.0, 4.0, 2.5])
        peak = rng.uniform(250.0, 900.0) * gain

        def shape(xs, ys, zs):
            r2 = ((xs - c[0]) / semi[0]) ** 2 + ((ys - c[1]) / semi[1]) ** 2 + ((zs - c[2]) / semi[2]) ** 2
            return r2 <= 1, 140 + (peak - 140) * (1 - r2)

        lo, hi, sub = c - semi - 1, c + semi + 1, 3
    elif kind == "mitral-annulus":  # an arc of the annulus ring, in the base between atrium and ventricle
        centre = heart.centre - heart.u * heart.semi[0] * 0.5 + heart.w * heart.semi[2] * 0.2
        radius, thick = rng.uniform(12.0, 16.0), rng.uniform(1.5, 3.0)
        start, span = rng.uniform(0, 360), rng.uniform(40.0, 120.0)
        arc = np.array([centre + radius * (heart.v * np.cos(a) + heart.w * np.sin(a))
                        for a in np.radians(np.linspace(start, start + span, 16))])
        peak = rng.uniform(300.0, 900.0) * gain

        def shape(xs, ys, zs):
            dist = np.full(np.broadcast_shapes(xs.shape, ys.shape, zs.shape), np.inf, np.float32)
            for p0, p1 in zip(arc[:-1], arc[1:]):
                dist = np.minimum(dist, _segment_distance(xs, ys, zs, p0, p1)[0])
            return dist < thick, 140 + (peak - 140) * (1 - (dist / thick) ** 2)

        c = arc.mean(axis=0)
        lo, hi, sub = arc.min(axis=0) - thick - 1, arc.max(axis=0) + thick + 1, 3
    else:  # stent: a hollow metal tube along a coronary segment
        for _attempt in range(20):
            vessel = str(rng.choice(["LAD", "RCA", "LCx"]))
            p0, direction = _point_on(paths[vessel], float(rng.uniform(0.1, 0.5)))
            length = rng.uniform(8.0, 20.0)
            p1 = p0 + direction * length
            if all(_segment_distance(*c, p0, p1)[0] > 8.0 for c in plaque_centres):
                break
        else:
            return None
        r_out = vessel_r[vessel] + 0.2
        wall = rng.uniform(0.25, 0.45)
        metal = rng.uniform(1200.0, 3000.0)

        def shape(xs, ys, zs):
            dist = _segment_distance(xs, ys, zs, p0, p1)[0]
            return (dist <= r_out) & (dist >= r_out - wall), np.full(dist.shape, metal, np.float32)

        c = (p0 + p1) / 2
        lo, hi, sub = np.minimum(p0, p1) - r_out - 1, np.maximum(p0, p1) + r_out + 1, 3
    drawn = canvas.paint(lo, hi, shape, sub=sub, support=True)
    return None if drawn is False else (kind, c, drawn)
