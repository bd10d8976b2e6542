"""A deterministic chest CT phantom with pulmonary nodules of known truth (pure numpy).

Geometry: axial slices, voxel (k, j, i) at patient position (LPS, mm)
``origin + (i*0.9, j*0.9, k*1.0)``: columns run to the patient's left (+x), rows to posterior
(+y), and slice index k runs from feet to head (+z). ImageOrientationPatient is
(1, 0, 0, 0, 1, 0) and ImagePositionPatient of slice k is ``origin + (0, 0, k)``.

Anatomy: body ellipse (skin, subcutaneous fat, chest-wall muscle), ribs, sternum, spine,
mediastinum with heart, aorta and trachea, a diaphragm dome with liver below, two lungs
(~-850 HU with low-frequency texture and a dependent gradient) holding branching, tapering
pulmonary vessels (40 HU, 6 mm to 1 mm) that look like nodules on single slices; Gaussian
noise (sigma 20 HU).

Nodule truth: a nodule body is a ball of the stated diameter. ``volume_mm3`` is the number of
voxels whose centre lies within that ball (distance <= radius), times the voxel volume; the
ground-glass halo of a part-solid nodule counts, spicule strands do not. The ball is drawn with
a one-voxel soft edge whose fraction is > 0.5 exactly on those voxels. Lobe truth is
``pathways.lung_anatomy`` applied to the centre with extents from the phantom's lung mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pathways.lung_anatomy import lung_extents_from_mask
from radpath.synth.geometry import Grid, ball_distance, blend, capsule

SHAPE = (220, 384, 384)
SPACING = (1.0, 0.9, 0.9)  # z, y, x (mm)
NOISE_SIGMA_HU = 20.0
HU = {
    "air": -1000, "fat": -100, "skin": 30, "muscle": 45, "mediastinum": -40, "heart": 40,
    "blood": 40, "liver": 55, "lung": -850, "bone_cortex": 900, "bone_marrow": 420, "disc": 80,
    "csf": 15, "solid": 30, "ground_glass": -550, "spicule": -20,
}


@dataclass(frozen=True)
class NoduleTruth:
    index: int
    centre_zyx_vox: tuple[float, float, float]
    centre_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    volume_mm3: float
    nodule_type: str  # "solid" | "part-solid" | "ground-glass"
    lobe: str  # "RUL" | "RML" | "RLL" | "LUL" | "LLL"
    spiculated: bool
    solid_core_diameter_mm: float | None


@dataclass(frozen=True)
class ChestPhantom:
    hu: np.ndarray  # int16, shape (z, y, x), Hounsfield units
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    nodules: tuple[NoduleTruth, ...]
    lung_mask: np.ndarray  # bool, same shape


@dataclass(frozen=True)
class _Lung:
    side: str
    cx: float
    cy: float
    ax: float
    ay: float


_LUNGS = (_Lung("R", -68.0, 5.0, 58.0, 85.0), _Lung("L", 68.0, 5.0, 55.0, 85.0))
_APEX_START_Z, _APEX_Z = 40.0, 100.0  # lungs taper (ellipsoidal dome) from here to the apex
_CAVITY = (140.0, 100.0, 5.0)  # semi-axis x, semi-axis y, centre y of the thoracic cavity


def _ellipse_r2(x, y, cx, cy, ax, ay):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _diaphragm_z(x, y):
    """Height of the diaphragm dome (mm); the right hemidiaphragm sits higher."""
    r2 = np.minimum(_ellipse_r2(x, y, 0.0, _CAVITY[2], _CAVITY[0], _CAVITY[1]), 1.0)
    return -92.0 + 42.0 * (1.0 - r2) - 0.06 * x - 0.08 * (y - _CAVITY[2])


def _apex_scale(z):
    t = np.clip((z - _APEX_START_Z) / (_APEX_Z - _APEX_START_Z), 0.0, 1.0)
    return np.sqrt(np.maximum(1.0 - t**2, 0.0))


def _base_slices(grid: Grid, hu: np.ndarray) -> None:
    """Body wall, cavity, spine, sternum and ribs."""
    z, y, x = grid.axis(0)[:, None, None], grid.axis(1)[:, None], grid.axis(2)[None, :]
    outer = _ellipse_r2(x, y, 0, 3, 165, 118)
    slab = np.full(outer.shape, HU["air"], np.float32)
    slab[outer < 1] = HU["skin"]
    slab[_ellipse_r2(x, y, 0, 3, 163, 116) < 1] = HU["fat"]
    slab[_ellipse_r2(x, y, 0, 4, 150, 107) < 1] = HU["muscle"]
    cavity = _ellipse_r2(x, y, 0, _CAVITY[2], _CAVITY[0], _CAVITY[1])
    slab[cavity < 1] = HU["mediastinum"]
    hu[:] = slab
    # Liver/abdomen under the diaphragm.
    below = (z < _diaphragm_z(x, y)[None]) & (cavity < 1)[None]
    hu[below] = HU["liver"]
    # Spine: vertebral body with discs every 28 mm, canal and arch.
    rb = np.hypot(x, y - 72.0)
    hu[:, rb < 17] = HU["bone_cortex"]
    hu[:, rb < 14.5] = HU["bone_marrow"]
    disc = (np.mod(grid.axis(0), 28.0) < 6.0)
    hu[disc[:, None, None] & (rb < 17)[None]] = HU["disc"]
    rc = np.hypot(x, y - 97.0)
    hu[:, (rc < 12) & (rc >= 7)] = HU["bone_cortex"] - 200
    hu[:, rc < 7] = HU["csf"]
    # Sternum.
    sternum = (np.abs(x) < 16) & (y > -110) & (y < -97)
    hu[:, sternum] = HU["bone_marrow"]
    # Ribs: a shell just outside the cavity, banded in z, sloping down anteriorly.
    shell = (cavity >= 1.0) & (cavity < 1.2) & ~((np.abs(x) < 25) & (y < 0))
    phase = np.mod(z + 0.4 * (100.0 - y)[None], 24.0)
    rib = shell[None] & (phase < 9.0) & (z > -100) & (z < 95)
    hu[rib] = HU["bone_marrow"]
    hu[rib & ((phase < 1.8) | (phase > 7.2))] = HU["bone_cortex"]


def _mediastinum(grid: Grid, hu: np.ndarray) -> np.ndarray:
    """Heart, aorta and trachea; returns the (z, y, x) mask of where lungs may not go."""
    z, y, x = grid.axis(0)[:, None, None], grid.axis(1)[None, :, None], grid.axis(2)[None, None, :]
    blocked = np.zeros(grid.shape, bool)
    heart = _ellipse_r2(x, y, 18, -25, 62, 50) + ((z + 30) / 42) ** 2 < 1
    hu[heart] = HU["heart"]
    blocked |= _ellipse_r2(x, y, 18, -25, 66, 54) + ((z + 30) / 45) ** 2 < 1
    zz = grid.axis(0)
    for (cx, cy, r), (z0, z1) in (((22, 60, 12), (-100, 78)), ((12, -40, 15), (-10, 78)),
                                  ((0, 5, 11), (30, 110))):
        ring = np.hypot(x[0] - cx, y[0] - cy)
        zsel = slice(*np.searchsorted(zz, [z0, z1]))
        hu[zsel, ring < r] = HU["blood"]
        blocked[zsel, ring < r + 4] = True
    # Arch joining ascending and descending aorta.
    arch = capsule(grid, (72, -40, 12), (72, 60, 22), 12.0, 12.0, 0.9)
    hu[arch[0]][arch[1] > 0.5] = HU["blood"]
    blocked[arch[0]] |= arch[1] > 0
    trachea = np.hypot(x[0], y[0] - 5) < 9
    hu[np.searchsorted(zz, 30.0):, trachea] = HU["air"]
    blocked[:, :, np.abs(grid.axis(2)) < 14] = True
    blocked[:, (np.hypot(x[0], y[0] - 72) < 22) | (np.hypot(x[0], y[0] - 97) < 14)] = True
    return blocked


def _lungs(grid: Grid, blocked: np.ndarray) -> np.ndarray:
    z, y, x = grid.axis(0)[:, None, None], grid.axis(1)[None, :, None], grid.axis(2)[None, None, :]
    s = _apex_scale(z)
    widen = 1.0 + 0.12 * np.clip((_APEX_START_Z - z) / 130.0, 0.0, 1.0)  # lungs widen to the base
    cavity = _ellipse_r2(x, y, 0, _CAVITY[2], _CAVITY[0] * 0.95, _CAVITY[1] * 0.95) < 1
    above = z > _diaphragm_z(x, y) + 2.0
    mask = np.zeros(grid.shape, bool)
    for lung in _LUNGS:
        mask |= _ellipse_r2(x, y, lung.cx, lung.cy, lung.ax * s * widen + 1e-3,
                            lung.ay * s * (1 + (widen - 1) / 2) + 1e-3) < 1
    mask &= cavity & above & ~blocked & (z < _APEX_Z)
    return mask


def _lung_parenchyma(grid: Grid, hu: np.ndarray, lung: np.ndarray, rng) -> None:
    coarse = rng.standard_normal((grid.shape[0] // 8 + 2, grid.shape[1] // 8 + 2,
                                  grid.shape[2] // 8 + 2)).astype(np.float32)
    texture = ndimage.zoom(coarse, [n / c for n, c in zip(grid.shape, coarse.shape)], order=1)
    texture = texture[: grid.shape[0], : grid.shape[1], : grid.shape[2]]
    dependent = (grid.axis(1) - grid.axis(1).mean()) * 0.3  # posterior (dependent) lung denser
    parenchyma = HU["lung"] + 25.0 * texture + dependent[None, :, None]
    hu[lung] = parenchyma[lung]


def _vessel_tree(grid: Grid, lung: np.ndarray, rng) -> list[tuple]:
    """Segments (p0, p1, r0, r1) of pulmonary vessel trees grown from each hilum."""
    def inside(p) -> bool:
        idx = [int(round((p[a] - grid.start[a]) / grid.spacing[a])) for a in range(3)]
        return all(0 <= idx[a] < grid.shape[a] for a in range(3)) and bool(lung[tuple(idx)])

    segments: list[tuple] = []
    for lung_def in _LUNGS:
        lateral = -1.0 if lung_def.side == "R" else 1.0
        hilum = np.array([5.0, -5.0, lung_def.cx - lateral * 0.55 * lung_def.ax])
        # Roots aim from the hilum at random points of this lung, so the trees fill it.
        cols = (grid.axis(2) - lung_def.cx) * lateral > -0.6 * lung_def.ax
        candidates = np.argwhere(lung[:, :, cols][::4, ::4, ::4])
        stack = []
        for k in rng.choice(len(candidates), size=12, replace=False):
            target = np.array(grid.start) + candidates[k] * np.array(grid.spacing) * 4
            target[2] = grid.axis(2)[cols][candidates[k][2] * 4]
            d = target - hilum
            stack.append((hilum, d / np.linalg.norm(d), float(rng.uniform(2.0, 3.0))))
        while stack and len(segments) < 1600 * (1 + (lung_def.side == "L")):
            p0, d, r0 = stack.pop()
            length = 5.0 * r0 + rng.uniform(4.0, 9.0)
            r1 = r0 * 0.92
            p1 = p0 + d * length
            if not inside(p1):
                p1 = p0 + d * length * 0.5
                if not inside(p1):
                    continue
            segments.append((p0, p1, r0, r1))
            if r1 < 0.55:
                continue
            for sign, spread, shrink in ((1.0, (10, 25), (0.82, 0.92)), (-1.0, (25, 45), (0.7, 0.82))):
                axis = np.cross(d, rng.standard_normal(3))
                axis /= np.linalg.norm(axis) + 1e-9
                angle = np.radians(rng.uniform(*spread)) * sign
                nd = d * np.cos(angle) + np.cross(axis, d) * np.sin(angle)
                outward = p1 - hilum
                nd = nd / np.linalg.norm(nd) + 0.3 * outward / (np.linalg.norm(outward) + 1e-9)
                stack.append((p1, nd / np.linalg.norm(nd), r1 * rng.uniform(*shrink)))
    return segments


def _draw_vessels(grid: Grid, hu: np.ndarray, lung: np.ndarray, rng) -> None:
    frac = np.zeros(grid.shape, np.float32)
    for p0, p1, r0, r1 in _vessel_tree(grid, lung, rng):
        box, f = capsule(grid, p0, p1, r0, r1, 0.9)
        if box is not None:
            np.maximum(frac[box], f, out=frac[box])
    frac *= lung
    hu += frac * (HU["blood"] - hu)


def _nodule_spec(rng) -> tuple[float, str, float | None, bool]:
    diameter = round(float(np.exp(rng.uniform(np.log(3.0), np.log(30.0)))), 1)
    kind = rng.choice(["solid", "ground-glass", "part-solid"], p=[0.6, 0.2, 0.2])
    if kind == "part-solid" and diameter < 8.0:
        kind = "ground-glass"
    core = round(diameter * float(rng.uniform(0.3, 0.6)), 1) if kind == "part-solid" else None
    spiculated = bool(kind != "ground-glass" and diameter >= 8.0 and rng.random() < 0.4)
    return diameter, str(kind), core, spiculated


def _place(grid: Grid, lung: np.ndarray, radius: float, placed, rng):
    """A centre (mm, zyx) whose ball (plus 2 mm) lies in the lung, clear of other nodules."""
    lo = np.array(grid.start)
    hi = lo + np.array(grid.spacing) * (np.array(grid.shape) - 1)
    for _ in range(400):
        c = rng.uniform(lo, hi)
        if any(np.linalg.norm(c - pc) < radius + pr + 10.0 for pc, pr in placed):
            continue
        box, dist = ball_distance(grid, c, radius + 2.0, 0.0)
        if box is None:
            continue
        ball = dist <= radius + 2.0
        if np.all(lung[box][ball]) and (c - lo - radius - 2 > 0).all() and (hi - c - radius - 2 > 0).all():
            return c
    return None


def _draw_nodule(grid: Grid, hu, lung, centre, diameter, kind, core, spiculated, rng) -> int:
    """Draw one nodule; return the voxel-centre count of its body."""
    radius = diameter / 2.0
    if spiculated:
        for _ in range(int(rng.integers(6, 13))):
            d = rng.standard_normal(3)
            d /= np.linalg.norm(d)
            start = centre + d * radius * 0.8
            end = start + d * max(4.0, radius * rng.uniform(0.5, 1.2))
            box, f = capsule(grid, start, end, 0.7, 0.35, 0.9)
            if box is not None:
                blend(hu, box, f, HU["spicule"], where=lung[box])
    box, dist = ball_distance(grid, centre, radius, 1.0)
    body = np.clip((radius - dist) / 0.9 + 0.5, 0, 1).astype(np.float32)
    value = HU["solid"] if kind == "solid" else HU["ground_glass"]
    texture = rng.normal(0.0, 12.0 if kind == "solid" else 30.0, size=body.shape).astype(np.float32)
    blend(hu, box, body, value + texture)
    if core is not None:
        cbox, cdist = ball_distance(grid, centre, core / 2.0, 1.0)
        blend(hu, cbox, np.clip((core / 2.0 - cdist) / 0.9 + 0.5, 0, 1).astype(np.float32),
              HU["solid"])
    return int(np.count_nonzero(dist <= radius))


def _anatomy(seed: int):  # noqa: ANN202 - (rng, grid, hu, lung, origin_xyz)
    """The chest without nodules or noise, and the generator in the state the nodules draw from."""
    rng = np.random.default_rng([seed, 0xC7])
    nz, ny, nx = SHAPE
    origin_xyz = (-(nx - 1) / 2 * SPACING[2], -(ny - 1) / 2 * SPACING[1], -(nz - 1) / 2 * SPACING[0])
    grid = Grid(SHAPE, SPACING, (origin_xyz[2], origin_xyz[1], origin_xyz[0]))
    hu = np.empty(SHAPE, np.float32)
    _base_slices(grid, hu)
    blocked = _mediastinum(grid, hu)
    lung = _lungs(grid, blocked)
    del blocked
    _lung_parenchyma(grid, hu, lung, rng)
    _draw_vessels(grid, hu, lung, rng)
    return rng, grid, hu, lung, origin_xyz


def _truth(grid: Grid, lungs, index: int, centre, diameter, kind, core, spiculated, n_vox: int) -> NoduleTruth:
    zyx_vox = tuple(float((centre[a] - grid.start[a]) / SPACING[a]) for a in range(3))
    xyz_mm = (float(centre[2]), float(centre[1]), float(centre[0]))
    return NoduleTruth(index=index, centre_zyx_vox=zyx_vox, centre_xyz_mm=xyz_mm, diameter_mm=diameter,
                       volume_mm3=round(n_vox * SPACING[0] * SPACING[1] * SPACING[2], 3), nodule_type=kind,
                       lobe=lungs.lobe_of(xyz_mm), spiculated=spiculated, solid_core_diameter_mm=core)


def _add_nodules(grid: Grid, hu, lung, lungs, rng, count: int, placed: list, first_index: int) -> list[NoduleTruth]:
    truths = []
    for index in range(first_index, first_index + count):
        diameter, kind, core, spiculated = _nodule_spec(rng)
        centre = None
        while centre is None:
            centre = _place(grid, lung, diameter / 2.0, placed, rng)
            if centre is None:
                diameter = round(max(3.0, diameter * 0.8), 1)
                core = round(core * 0.8, 1) if core is not None else None
        placed.append((centre, diameter / 2.0))
        n_vox = _draw_nodule(grid, hu, lung, centre, diameter, kind, core, spiculated, rng)
        truths.append(_truth(grid, lungs, index, centre, diameter, kind, core, spiculated, n_vox))
    return truths


def _finish(hu, lung, rng, origin_xyz, truths) -> ChestPhantom:
    hu += rng.standard_normal(SHAPE, dtype=np.float32) * NOISE_SIGMA_HU
    np.rint(hu, out=hu)
    np.clip(hu, -1024, 3071, out=hu)
    return ChestPhantom(hu=hu.astype(np.int16), spacing_zyx_mm=SPACING,
                        origin_xyz_mm=tuple(float(v) for v in origin_xyz),
                        nodules=tuple(truths), lung_mask=lung)


def make_chest_ct(seed: int, n_nodules: int | None = None) -> ChestPhantom:
    """A chest CT phantom; the same seed gives a byte-identical volume and truth."""
    rng, grid, hu, lung, origin_xyz = _anatomy(seed)
    count = int(rng.integers(0, 5)) if n_nodules is None else n_nodules
    lungs = lung_extents_from_mask(lung, SPACING, origin_xyz)
    truths = _add_nodules(grid, hu, lung, lungs, rng, count, [], 1)
    return _finish(hu, lung, rng, origin_xyz, truths)


def make_follow_up_ct(seed: int, volume_ratio: dict[int, float], *, new_nodules: int = 0,
                      shift_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                      n_nodules: int | None = None) -> ChestPhantom:
    """The same patient's chest re-imaged: the anatomy of `make_chest_ct(seed, n_nodules)`, each of its
    nodules at the same place with its volume times `volume_ratio[index]` (default 1: stable;
    0: resolved), `new_nodules` new ones, and the patient lying `shift_xyz_mm` elsewhere in the
    scanner (the whole image's patient position moves). The truth's volumes are the drawn
    voxels, so truth VDT = interval x ln 2 / ln(V_follow-up / V_baseline) of these truths."""
    baseline = make_chest_ct(seed, n_nodules)
    rng, grid, hu, lung, origin_xyz = _anatomy(seed)
    lungs = lung_extents_from_mask(lung, SPACING, origin_xyz)
    draw = np.random.default_rng([seed, 0xF0])
    truths, placed = [], []
    for prior in baseline.nodules:
        ratio = volume_ratio.get(prior.index, 1.0)
        centre = np.array(prior.centre_xyz_mm[::-1])
        placed.append((centre, prior.diameter_mm / 2.0))
        if ratio <= 0:
            continue
        scale = ratio ** (1.0 / 3.0)
        diameter = round(prior.diameter_mm * scale, 2)
        core = round(prior.solid_core_diameter_mm * scale, 2) if prior.solid_core_diameter_mm else None
        n_vox = _draw_nodule(grid, hu, lung, centre, diameter, prior.nodule_type, core, prior.spiculated, draw)
        truths.append(_truth(grid, lungs, prior.index, centre, diameter, prior.nodule_type, core, prior.spiculated, n_vox))
    first_new = max((n.index for n in baseline.nodules), default=0) + 1
    truths += _add_nodules(grid, hu, lung, lungs, draw, new_nodules, placed, first_new)
    shifted = tuple(o + d for o, d in zip(origin_xyz, shift_xyz_mm))
    phantom = _finish(hu, lung, draw, origin_xyz, truths)
    moved = tuple(_moved(t, shift_xyz_mm) for t in phantom.nodules)
    return ChestPhantom(hu=phantom.hu, spacing_zyx_mm=SPACING, origin_xyz_mm=tuple(float(v) for v in shifted),
                        nodules=moved, lung_mask=lung)


def _moved(truth: NoduleTruth, shift_xyz_mm) -> NoduleTruth:
    """A nodule's truth in the shifted patient position (its voxel position is unchanged)."""
    from dataclasses import replace

    return replace(truth, centre_xyz_mm=tuple(c + d for c, d in zip(truth.centre_xyz_mm, shift_xyz_mm)))
