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
  far above calcified plaque), or ring-shaped (a hole inside it on `ring_min_slices` slices,
  the lumen of a stent).
- **Not epicardial**: fewer than `min_epicardial_fraction` of the voxels in a shell 1 to
  `shell_mm` mm around it are fat or lung (< -30 HU). Calcium inside the heart's soft tissue
  and blood (aortic valve, mitral annulus deep in the base, myocardium) is not coronary.
- **Tube voltage**: Agatston's 130 HU threshold and density factors hold at 120 kVp (SCCT
  2017: "120 kVp"); any other KVP, or none recorded, is not measurable.
- **Contrast**: a contrast-enhanced scan puts the blood pool above 130 HU, so coronary
  calcium cannot be separated from it (SCCT 2017: calcium scoring is a non-contrast scan);
  a median mediastinal soft-tissue HU above `max_blood_pool_hu` is not measurable.

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
        self._hull = _lung_footprint_hull(hu, self.spacing)

    def in_mediastinum(self, centre_yx_vox: np.ndarray) -> bool | None:
        """Inside the convex hull of the lungs' axial footprint; None: no lungs to tell by."""
        if self._hull is None:
            return None
        return bool(self._hull.find_simplex(centre_yx_vox[None, :])[0] >= 0)

    def blood_pool_hu(self) -> float | None:
        """Median HU of the non-fat soft tissue inside the lung hull over the middle third of slices."""
        if self._hull is None:
            return None
        nz = self.hu.shape[0]
        slab = self.hu[nz // 3: max(nz // 3 + 1, 2 * nz // 3)]
        rows, cols = np.mgrid[0:slab.shape[1]:4, 0:slab.shape[2]:4]
        inside = self._hull.find_simplex(np.column_stack([rows.ravel(), cols.ravel()])) >= 0
        sample = slab[:, rows.ravel()[inside], cols.ravel()[inside]]
        tissue = sample[(sample > -30) & (sample < 1000)]
        return float(np.median(tissue)) if tissue.size else None


def _lung_footprint_hull(hu: np.ndarray, spacing: tuple[float, float, float]) -> Delaunay | None:
    """Delaunay triangulation of the convex hull of the lungs (< -400 HU, >= 20 ml) seen along z."""
    air = hu < -400
    labels, count = ndimage.label(air)
    if not count:
        return None
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * float(np.prod(spacing))
    sizes[0] = 0
    lungs = np.isin(labels, np.nonzero(sizes >= 20_000.0)[0])
    footprint = lungs.any(axis=0)
    points = np.argwhere(footprint)
    if len(points) < 10:
        return None
    try:
        hull = ConvexHull(points[:: max(1, len(points) // 20000)])
        return Delaunay(hull.points[hull.vertices])
    except QhullError:
        return None


def _shell_fraction_below(hu: np.ndarray, component: np.ndarray, box: tuple[slice, ...],
                          spacing: tuple[float, float, float], shell_mm: float, below_hu: float) -> float:
    """Fraction of voxels 1 to shell_mm mm outside the component (in a local box) below `below_hu`."""
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
    return float(np.mean(values < below_hu))


def _ring_slices(component: np.ndarray) -> int:
    """Slices on which the component encloses a hole (the lumen of a stent)."""
    return sum(1 for plane in component if (ndimage.binary_fill_holes(plane) & ~plane).any())


def exclusion(context: ChestContext, k: int, box: tuple[slice, ...], component: np.ndarray, peak_hu: float,
              rules) -> Exclusion | None:  # rules: pathways.heart_failure.CalciumRules (no import cycle)
    """Why object `k` (its bounding `box` and mask within it) is not coronary calcium; None if it can be."""
    spacing, shape = context.spacing, context.hu.shape
    margin_y, margin_x = (int(np.ceil(rules.edge_margin_mm / s)) for s in spacing[1:])
    if box[1].start < margin_y or box[1].stop > shape[1] - margin_y or box[2].start < margin_x \
            or box[2].stop > shape[2] - margin_x:
        return "field-edge"
    if peak_hu >= rules.metal_min_hu or _ring_slices(component) >= rules.ring_min_slices:
        return "metal"
    if len(context.large):
        pad = [int(np.ceil(rules.bone_margin_mm / s)) for s in spacing]
        near = tuple(slice(max(0, b.start - p), b.stop + p) for b, p in zip(box, pad))
        if np.isin(context.labels[near], context.large).any():
            distance = ndimage.distance_transform_edt(~np.isin(context.labels[near], context.large), sampling=spacing)
            inner = tuple(slice(b.start - n.start, b.stop - n.start) for b, n in zip(box, near))
            if float(distance[inner][component].min()) <= rules.bone_margin_mm:
                return "bone"
    centre = np.argwhere(component).mean(axis=0) + [b.start for b in box]
    if context.in_mediastinum(centre[1:]) is False:
        return "chest-wall"
    fraction = _shell_fraction_below(context.hu, component, box, spacing, rules.shell_mm, -30.0)
    if fraction < rules.min_epicardial_fraction:
        return "not-epicardial"
    return None


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


def contrast_problem(context: ChestContext, rules) -> str:
    """Why the scan looks contrast-enhanced ('' when its blood pool reads as unenhanced)."""
    blood = context.blood_pool_hu()
    if blood is not None and blood > rules.max_blood_pool_hu:
        return (f"contrast-enhanced (median mediastinal soft tissue {blood:.0f} HU, above {rules.max_blood_pool_hu:g}): "
                "calcium scoring needs a non-contrast scan (SCCT 2017)")
    return ""
