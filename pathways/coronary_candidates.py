"""Which >= 130 HU objects of a calcium-scoring CT can be coronary calcium, and whether the scan
can be scored at all. Pure numpy/scipy over an HU volume; no I/O.

Agatston scoring counts coronary calcium only (Agatston 1990). The SCCT guideline on coronary
artery calcium scoring (Hecht HS, et al. J Cardiovasc Comput Tomogr 2017;11:74-84) and CAC-DRS
(Hecht 2018) exclude calcium of the aortic and mitral valves, the annulus and the aorta, and
bone; coronary stents are metal, not calcium, and scoring them is meaningless. Coronary
arteries run in the epicardial fat of the atrioventricular and interventricular grooves.

radpath's rules (anatomical, not learned; each threshold is a `CalciumRules` field):
- **Bone**: any >= 130 HU object larger than `max_lesion_volume_mm3` (spine, sternum, ribs) is
  bone, and so is a small object within `bone_margin_mm` of one (a rib end beside its rib).
- **Outside the mediastinum**: the in-plane centre lies outside the convex hull of the lungs'
  axial footprint (chest wall: ribs, costal cartilage); or the object reaches within
  `edge_margin_mm` of the reconstructed field's edge (a rib end cut by a cardiac field).
- **Metal**: peak >= `metal_min_hu` (stents, wires, sternotomy wires, prosthetic valves read
  far above calcified plaque); or ring-shaped (a hole inside it on `ring_min_slices` slices,
  the lumen of a stent); or dense (peak >= `dense_min_hu`) and at least `stent_min_length_mm`
  long (coronary stents are 8-38 mm); and any fragment within `metal_margin_mm` of metal.
- **Not epicardial**: fewer than `min_epicardial_fraction` of the voxels in a shell 1 to
  `shell_mm` mm around it are fat (-190 to -30 HU, the adipose window conventional in CT fat
  quantification). Calcium inside the heart's soft tissue and blood (aortic valve, mitral
  annulus deep in the base, myocardium), and bone or cartilage in muscle beside the lung, is
  not coronary.
- **Tube voltage**: Agatston's 130 HU threshold and density factors hold at 120 kVp (SCCT
  2017: "120 kVp"); any other KVP, or none recorded, is not measurable.
- **Contrast**: a contrast-enhanced scan puts the blood pool above 130 HU, so coronary
  calcium cannot be separated from it (SCCT 2017: calcium scoring is a non-contrast scan).
  A Contrast/Bolus Agent in the images, or a >= 130 HU structure of at least
  `min_blood_pool_ml` whose centre lies `blood_pool_depth_mm` inside the lung hull with a
  median below 700 HU (enhanced blood; the spine sits at the hull's back edge), is not measurable.

Not handled (documented in the hazard log): calcium of the mitral annulus in the
atrioventricular groove fat beside the circumflex, and of the aortic wall where it lies in
fat; per-vessel territories without centrelines.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay, QhullError

Exclusion = Literal["bone", "chest-wall", "field-edge", "metal", "not-epicardial"]

EXCLUSION_WORDS: dict[str, str] = {
    "bone": "bone (touches or lies beside a large bony structure)",
    "chest-wall": "outside the mediastinum (chest wall)",
    "field-edge": "cut by the edge of the reconstructed field",
    "metal": "metal (stent, wire or prosthesis)",
    "not-epicardial": "not in epicardial fat (valve, annulus or myocardium)",
}


class ChestContext:
    """What the candidate checks need from the whole volume, computed once per scan."""

    def __init__(self, hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float], threshold_hu: float,
                 max_lesion_volume_mm3: float) -> None:
        self.hu, self.spacing = hu, tuple(float(v) for v in spacing_zyx_mm)
        voxel = float(np.prod(self.spacing))
        self.labels, count = ndimage.label(hu >= threshold_hu)
        sizes = np.bincount(self.labels.ravel(), minlength=count + 1) * voxel
        sizes[0] = 0
        self.sizes_mm3 = sizes
        self.large = np.nonzero(sizes > max_lesion_volume_mm3)[0]
        hull = _lung_footprint_hull(hu, self.spacing)
        self._hull = None if hull is None else Delaunay(hull.points[hull.vertices])
        self._facets = None if hull is None else hull.equations  # (n, 3): normal . (row, col) + offset <= 0 inside

    def in_mediastinum(self, centre_yx_vox: np.ndarray) -> bool | None:
        """Inside the convex hull of the lungs' axial footprint; None: no lungs to tell by."""
        if self._hull is None:
            return None
        return bool(self._hull.find_simplex(centre_yx_vox[None, :])[0] >= 0)

    def depth_in_hull_mm(self, centre_yx_vox: np.ndarray) -> float | None:
        """How far inside the lung hull an in-plane point lies (negative: outside); None: no lungs."""
        if self._hull is None:
            return None
        normals, offsets = self._facets[:, :2], self._facets[:, 2]
        return float(-(normals @ centre_yx_vox + offsets).max() * self.spacing[1])

    def blood_pool(self, min_volume_mm3: float, min_depth_mm: float) -> tuple[float, float] | None:
        """(volume mm^3, median HU) of a large >= threshold structure deep inside the lung hull
        whose values are those of enhanced blood, not bone (median below 700 HU); None if none."""
        for k in self.large:
            if self.sizes_mm3[k] < min_volume_mm3:
                continue
            voxels = np.argwhere(self.labels == k)
            depth = self.depth_in_hull_mm(voxels[:, 1:].mean(axis=0))
            median = float(np.median(self.hu[tuple(voxels.T)]))
            if depth is not None and depth >= min_depth_mm and median < 700.0:
                return float(self.sizes_mm3[k]), median
        return None


def _hull_of(mask2d: np.ndarray) -> ConvexHull | None:
    points = np.argwhere(mask2d)
    if len(points) < 10:
        return None
    try:
        return ConvexHull(points[:: max(1, len(points) // 20000)])
    except QhullError:
        return None


def _inside(hull: ConvexHull, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    points = np.column_stack([rows.ravel(), cols.ravel()]).astype(float)
    return ((points @ hull.equations[:, :2].T + hull.equations[:, 2]).max(axis=1) <= 0.5).reshape(shape)


def _lung_footprint_hull(hu: np.ndarray, spacing: tuple[float, float, float]) -> ConvexHull | None:
    """The convex hull (row, col) of the lungs seen along z: air (< -400 HU) inside the body's
    outline (the hull of everything denser, so air outside the patient is not lung), in
    connected parts of at least 20 ml."""
    body = _hull_of((hu > -400).any(axis=0))
    if body is None:
        return None
    air = (hu < -400) & _inside(body, hu.shape[1:])[None]
    labels, count = ndimage.label(air)
    if not count:
        return None
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * float(np.prod(spacing))
    sizes[0] = 0
    lungs = np.isin(labels, np.nonzero(sizes >= 20_000.0)[0])
    return _hull_of(lungs.any(axis=0))


FAT_HU = (-190.0, -30.0)  # the adipose-tissue window conventional in CT fat quantification


def _shell_fraction_fat(hu: np.ndarray, component: np.ndarray, box: tuple[slice, ...],
                        spacing: tuple[float, float, float], shell_mm: float) -> float:
    """Fraction of voxels 1 to shell_mm mm outside the component (in a local box) that are fat."""
    pad = [int(np.ceil(shell_mm / s)) + 1 for s in spacing]
    lo = [max(0, b.start - p) for b, p in zip(box, pad)]
    hi = [min(n, b.stop + p) for b, n, p in zip(box, hu.shape, pad)]
    local = np.zeros([top - bottom for bottom, top in zip(lo, hi)], bool)
    local[tuple(slice(b.start - bottom, b.stop - bottom) for b, bottom in zip(box, lo))] = component
    distance = ndimage.distance_transform_edt(~local, sampling=spacing)
    shell = (distance > 1.0) & (distance <= shell_mm)
    if not shell.any():
        return 0.0
    values = hu[tuple(slice(bottom, top) for bottom, top in zip(lo, hi))][shell]
    return float(np.mean((values >= FAT_HU[0]) & (values <= FAT_HU[1])))


def _ring_slices(component: np.ndarray) -> int:
    """Slices on which the component encloses a hole (the lumen of a stent)."""
    return sum(1 for plane in component if (ndimage.binary_fill_holes(plane) & ~plane).any())


def _within(labels: np.ndarray, ids, box: tuple[slice, ...], component: np.ndarray,
            spacing: tuple[float, float, float], margin_mm: float) -> bool:
    """Whether the component comes within `margin_mm` of any voxel labelled one of `ids`."""
    pad = [int(np.ceil(margin_mm / s)) for s in spacing]
    near = tuple(slice(max(0, b.start - p), b.stop + p) for b, p in zip(box, pad))
    others = np.isin(labels[near], ids)
    if not others.any():
        return False
    distance = ndimage.distance_transform_edt(~others, sampling=spacing)
    inner = tuple(slice(b.start - n.start, b.stop - n.start) for b, n in zip(box, near))
    return float(distance[inner][component].min()) <= margin_mm


def _length_mm(component: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Extent along the object's principal axis."""
    points = np.argwhere(component) * np.asarray(spacing)
    if len(points) < 2:
        return float(min(spacing))
    centred = points - points.mean(axis=0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    return float(np.ptp(centred @ axis) + min(spacing))


def _is_metal(component: np.ndarray, peak_hu: float, spacing, rules) -> bool:
    return (peak_hu >= rules.metal_min_hu
            or _ring_slices(component) >= rules.ring_min_slices
            or (peak_hu >= rules.dense_min_hu and _length_mm(component, spacing) >= rules.stent_min_length_mm))


def exclusion(context: ChestContext, k: int, box: tuple[slice, ...], component: np.ndarray, peak_hu: float,
              rules) -> Exclusion | None:  # rules: pathways.heart_failure.CalciumRules (no import cycle)
    """Why object `k` (its bounding `box` and mask within it) is not coronary calcium; None if it can be."""
    spacing, shape = context.spacing, context.hu.shape
    margin_y, margin_x = (int(np.ceil(rules.edge_margin_mm / s)) for s in spacing[1:])
    if box[1].start < margin_y or box[1].stop > shape[1] - margin_y or box[2].start < margin_x \
            or box[2].stop > shape[2] - margin_x:
        return "field-edge"
    if _is_metal(component, peak_hu, spacing, rules):
        return "metal"
    if len(context.large) and _within(context.labels, context.large, box, component, spacing, rules.bone_margin_mm):
        return "bone"
    centre = np.argwhere(component).mean(axis=0) + [b.start for b in box]
    if context.in_mediastinum(centre[1:]) is False:
        return "chest-wall"
    fraction = _shell_fraction_fat(context.hu, component, box, spacing, rules.shell_mm)
    if fraction < rules.min_epicardial_fraction:
        return "not-epicardial"
    return None


class CandidateObject:
    """One >= threshold object small enough to be a lesion, and why it is not coronary calcium (None: it can be)."""

    __slots__ = ("label", "box", "component", "volume_mm3", "peak_hu", "exclusion")

    def __init__(self, label, box, component, volume_mm3, peak_hu, exclusion_reason) -> None:
        self.label, self.box, self.component = label, box, component
        self.volume_mm3, self.peak_hu, self.exclusion = volume_mm3, peak_hu, exclusion_reason


def candidate_objects(context: ChestContext, rules) -> list[CandidateObject]:
    """Every object no larger than `max_lesion_volume_mm3`, with its exclusion. A fragment
    within `metal_margin_mm` of metal is metal too (a stent breaks into pieces at 130 HU)."""
    voxel = float(np.prod(context.spacing))
    objects = []
    for k, box in enumerate(ndimage.find_objects(context.labels), start=1):
        if box is None or context.sizes_mm3[k] > rules.max_lesion_volume_mm3:
            continue
        component = context.labels[box] == k
        peak = float(context.hu[box][component].max())
        objects.append(CandidateObject(k, box, component, float(component.sum()) * voxel, peak,
                                       exclusion(context, k, box, component, peak, rules)))
    metal = [o.label for o in objects if o.exclusion == "metal"]
    for o in objects:
        if metal and o.exclusion is None and _within(context.labels, metal, o.box, o.component, context.spacing,
                                                     rules.metal_margin_mm):
            o.exclusion = "metal"
    return objects


def acquisition_problem(kvp_values: tuple[float, ...], rules) -> str:
    """Why the scan's tube voltage rules out Agatston scoring ('' when it is the reference)."""
    if not kvp_values:
        return (f"tube voltage (KVP) not recorded: the Agatston score is defined at {rules.reference_kvp:g} kVp "
                "(SCCT 2017)")
    other = sorted({round(v, 1) for v in kvp_values if abs(v - rules.reference_kvp) > 0.5})
    if other:
        shown = ", ".join(f"{v:g}" for v in other)
        return (f"acquired at {shown} kVp: the Agatston 130 HU threshold and density factors hold at "
                f"{rules.reference_kvp:g} kVp only (SCCT 2017)")
    return ""


def contrast_problem(context: ChestContext, contrast_agent: str, rules) -> str:
    """Why the scan is contrast-enhanced ('' when nothing says so): the images' Contrast/Bolus
    Agent, or a large blood-valued structure >= 130 HU deep in the mediastinum (the heart's
    chambers and aorta filled with contrast, which no bone is)."""
    if contrast_agent.strip():
        return f"contrast-enhanced (Contrast/Bolus Agent {contrast_agent.strip()!r}): calcium scoring needs a non-contrast scan (SCCT 2017)"
    pool = context.blood_pool(rules.min_blood_pool_ml * 1000.0, rules.blood_pool_depth_mm)
    if pool is not None:
        return (f"contrast-enhanced (a {pool[0] / 1000:.0f} ml structure of median {pool[1]:.0f} HU fills the mediastinum): "
                "calcium scoring needs a non-contrast scan (SCCT 2017)")
    return ""
