"""Segment and measure one pulmonary nodule in a local CT crop (pure numpy/scipy).

Steps, for a seed point from the detector:
1. Levels: lung background = median HU of the crop's voxels below -700 HU.
2. Two half-way thresholds from that background: a solid one (towards soft tissue, 0 HU) and a
   ground-glass one (towards GROUND_GLASS_LEVEL_HU). The solid mask is used unless the
   ground-glass mask reaches clearly beyond the solid one's blurred edge (a ground-glass body
   or halo).
3. Attached vessels are cut by a morphological opening (distance-transform based, exact in mm)
   with a ball of OPENING_FRACTION x the nodule's inscribed radius, keeping the seed's component,
   then the mask is limited to a ball of CLIP_FACTOR x that radius.
4. Measurements: longest axial diameter and longest perpendicular in-plane extent (mm), volume
   (voxel count), mean HU, solid-core equivalent diameter, type, spiculation.

Attenuation ranges. Definitions follow the Fleischner Society glossary (Hansell et al.,
Radiology 2008;246:697-722): ground-glass opacity is hazy increased attenuation that does not
obscure vessels; a part-solid nodule has both ground-glass and solid components. Typical
attenuation (used by quantitative studies of subsolid nodules, e.g. Lederlin et al., Eur Respir J
2013;41:943-951, and Bankier et al., Fleischner measurement recommendations, Radiology
2017;285:584-600 for the measurement rules): aerated lung about -850 HU, ground glass about
-750 to -300 HU, solid components above about -300 HU (soft tissue -100 to +100 HU).
Measurement follows Bankier 2017: long axis = longest in-plane diameter on the axial slice where
it is greatest, short axis = longest diameter perpendicular to it on the same slice, mean
diameter = their average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

LUNG_BELOW_HU = -700.0  # voxels counted as aerated lung for the background level
DEFAULT_LUNG_HU = -850.0  # aerated lung when a crop has none
SOLID_LEVEL_HU = 0.0  # soft tissue (solid nodule) attenuation
GROUND_GLASS_LEVEL_HU = -600.0  # middle of the ground-glass range (-750 to -300 HU)
SOLID_COMPONENT_HU = -300.0  # voxels at or above are "solid component"
OPENING_FRACTION = 0.6  # opening ball radius / inscribed radius: cuts vessels thinner than that
CLIP_FACTOR = 1.6  # the nodule is kept within this many inscribed radii of its centre
EDGE_MARGIN_MM = 1.5  # a solid edge blurred by the scanner reaches about this far at the glass threshold
GROUND_GLASS_RIM_RATIO = 0.3  # glass beyond that margin >= this x solid volume: a subsolid nodule
# Type cut-offs on (solid-core equivalent diameter / nodule equivalent diameter); see MODEL_CARD.md
SOLID_CORE_RATIO_SOLID = 0.8
SOLID_CORE_MIN_MM = 1.5  # a smaller solid core is ignored (noise, a crossing vessel): ground glass
# Vessels through ground glass (solid_component): a dense structure that also reaches the band
# of VESSEL_BAND_MM outside the nodule is opened by a ball of VESSEL_MAX_RADIUS_MM (+ half a voxel)
VESSEL_BAND_MM = 3.0
VESSEL_MAX_RADIUS_MM = 1.5
# Spiculation: spicule volume (thin protrusions ending near the nodule) / nodule volume, fitted on
# training phantoms by models/lung_nodule/build_model.py and recorded in MODEL_CARD.md
SPICULATION_CUTOFF = 0.05


@dataclass(frozen=True)
class NoduleMeasurement:
    """Measurements of one segmented nodule; ``mask`` covers ``crop`` of the full volume."""

    centre_zyx_vox: tuple[float, float, float]
    long_axis_mm: float
    short_axis_mm: float
    volume_mm3: float
    mean_hu: float
    solid_core_diameter_mm: float
    nodule_type: str
    spiculation_score: float
    spiculated: bool
    crop: tuple[slice, slice, slice]
    mask: np.ndarray

    @property
    def mean_diameter_mm(self) -> float:
        return 0.5 * (self.long_axis_mm + self.short_axis_mm)

    @property
    def roundness(self) -> float:
        """Short axis / long axis (1 for a circle in the axial plane)."""
        return self.short_axis_mm / self.long_axis_mm if self.long_axis_mm > 0 else 0.0

    @property
    def compactness(self) -> float:
        """Volume / volume of the sphere of the long axis (1 for a sphere, low for a vessel segment)."""
        return self.volume_mm3 / (np.pi / 6.0 * self.long_axis_mm**3) if self.long_axis_mm > 0 else 0.0

    @property
    def equivalent_diameter_mm(self) -> float:
        return sphere_diameter(self.volume_mm3)


def sphere_diameter(volume_mm3: float) -> float:
    """Diameter of the sphere of that volume."""
    return float((6.0 * max(volume_mm3, 0.0) / np.pi) ** (1.0 / 3.0))


def opening_mm(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Opening by a ball of radius_mm (distance maps, anisotropic voxels), within the mask.

    The dilation uses half a voxel more than the erosion so that a digitised sphere survives
    whole (a plain digital opening nibbles its staircase surface).
    """
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    eroded = ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm
    if not eroded.any():
        return eroded
    grown = ndi.distance_transform_edt(~eroded, sampling=spacing) <= radius_mm + 0.5 * max(spacing)
    return grown & mask


def axial_diameters(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float, int]:
    """(long axis mm, perpendicular short axis mm, slice index) over the mask's axial slices.

    A slice's long axis is its largest distance between pixel centres plus one pixel (the
    extent of a digitised disc); the short axis is the extent across that direction.
    """
    _, dy, dx = spacing
    pixel = 0.5 * (dy + dx)
    best = (0.0, 0.0, -1)
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        sl = mask[k]
        boundary = sl & ~ndi.binary_erosion(sl)
        jj, ii = np.nonzero(boundary)
        pts = np.column_stack([jj * dy, ii * dx])
        if len(pts) == 1:
            long_axis, short_axis = pixel, pixel
        else:
            d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
            a, b = np.unravel_index(int(np.argmax(d2)), d2.shape)
            long_axis = float(np.sqrt(d2[a, b])) + pixel
            direction = (pts[b] - pts[a]) / max(np.sqrt(d2[a, b]), 1e-9)
            across = pts @ np.array([-direction[1], direction[0]])
            short_axis = float(across.max() - across.min()) + pixel
        if long_axis > best[0]:
            best = (long_axis, min(short_axis, long_axis), int(k))
    return best


def solid_component(nodule: np.ndarray, crop_hu: np.ndarray, spacing,
                    vessel_hu: float = 0.5 * (DEFAULT_LUNG_HU + SOLID_LEVEL_HU)) -> np.ndarray:
    """The nodule's solid component: its voxels >= SOLID_COMPONENT_HU, less the vessels running through.

    Ground-glass opacity does not obscure the vessels within it (Fleischner Society glossary,
    Hansell et al., Radiology 2008;246:697-722), so a vessel crossing a ground-glass nodule is
    solid-density tissue that is not a solid component. What tells them apart here:
    - a vessel runs through: it continues outside the nodule, while the solid component of a
      part-solid nodule lies within its ground glass. A structure "runs outside" when its voxels
      >= ``vessel_hu`` (half-way from lung to soft tissue: a thin vessel in aerated lung is
      blurred below SOLID_COMPONENT_HU, yet stays above that) reach the band of VESSEL_BAND_MM
      just outside the nodule;
    - a vessel is thin: such a structure is opened by a ball of VESSEL_MAX_RADIUS_MM plus half
      a voxel, so a vessel up to about 3-4 mm across (subsegmental and smaller, widened by
      partial volume inside ground glass) disappears, while a thicker solid component or a
      solid nodule that a vessel touches survives.
    A solid-density structure that stays inside the nodule is kept whole, however small. A
    vessel thicker than that, or a solid component thinner than that which touches a vessel,
    is not told apart: the first errs towards part-solid (Brock's higher-risk type), the
    second towards ground glass. Elongation alone is not used: an eccentric or lobulated solid
    component may be elongated too. The largest remaining component is returned.
    """
    core = nodule & (crop_hu >= SOLID_COMPONENT_HU)
    if not core.any():
        return core
    near = ~nodule & (ndi.distance_transform_edt(~nodule, sampling=spacing) <= VESSEL_BAND_MM)
    vessels = crop_hu >= vessel_hu
    labels, _ = ndi.label(vessels)
    through = np.unique(labels[near & vessels])
    through = through[through > 0]
    if through.size:
        structure = np.isin(labels, through)
        thick = opening_mm(structure, VESSEL_MAX_RADIUS_MM + 0.5 * min(spacing), spacing)
        core &= ~structure | thick
    if core.any():
        labels, _ = ndi.label(core)
        core = labels == np.bincount(labels[labels > 0]).argmax()
    return core


def classify_type(solid_core_diameter_mm: float, diameter_mm: float) -> str:
    """solid / part-solid / ground-glass from the solid-core to nodule diameter ratio.

    The solid core is `solid_component`'s: vessels through ground glass are already discounted.
    """
    if solid_core_diameter_mm < SOLID_CORE_MIN_MM or diameter_mm <= 0:
        return "ground-glass"
    if solid_core_diameter_mm / diameter_mm >= SOLID_CORE_RATIO_SOLID:
        return "solid"
    return "part-solid"


def _grow(crop_hu: np.ndarray, threshold: float, seed: tuple[int, int, int]) -> np.ndarray:
    """The 6-connected component of voxels >= threshold that contains (or is nearest) the seed."""
    above = crop_hu >= threshold
    labels, n = ndi.label(above)
    if n == 0:
        return above
    label = labels[seed]
    if label == 0:
        # nearest labelled voxel within 2 voxels of the seed
        z, y, x = seed
        window = labels[max(z - 2, 0):z + 3, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        found = window[window > 0]
        if found.size == 0:
            return np.zeros_like(above)
        label = np.bincount(found).argmax()
    return labels == label


def _separate(mask: np.ndarray, seed: tuple[int, int, int], spacing) -> tuple[np.ndarray, float, tuple[int, int, int]]:
    """Cut attached vessels: opening scaled to the inscribed radius near the seed, then a ball clip."""
    if not mask.any():
        return mask, 0.0, seed
    edt = ndi.distance_transform_edt(mask, sampling=spacing)
    z, y, x = seed
    r = 3
    window = edt[max(z - r, 0):z + r + 1, max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
    local = np.unravel_index(int(np.argmax(window)), window.shape)
    centre = (local[0] + max(z - r, 0), local[1] + max(y - r, 0), local[2] + max(x - r, 0))
    inscribed = float(edt[centre])
    opened = opening_mm(mask, OPENING_FRACTION * inscribed, spacing) & mask
    if opened[centre]:
        labels, _ = ndi.label(opened)
        mask = labels == labels[centre]
    zz, yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    dist2 = (((zz - centre[0]) * spacing[0]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2
             + ((xx - centre[2]) * spacing[2]) ** 2)
    return mask & (dist2 <= (CLIP_FACTOR * inscribed + max(spacing)) ** 2), inscribed, centre


def _has_ground_glass(solid: np.ndarray, glass: np.ndarray, spacing) -> bool:
    """True when the ground-glass mask reaches clearly beyond the blurred edge of the solid one."""
    if not solid.any():
        return bool(glass.any())
    near_solid = ndi.distance_transform_edt(~solid, sampling=spacing) <= EDGE_MARGIN_MM
    return bool((glass & ~near_solid).sum() >= GROUND_GLASS_RIM_RATIO * solid.sum())


def spiculation_score(raw: np.ndarray, nodule: np.ndarray, centre: tuple[int, int, int],
                      radius_mm: float, spacing) -> float:
    """Volume of spicules / nodule volume.

    Protrusions are the thresholded voxels connected to the nodule but outside it (dilated by
    one voxel). A protrusion that ends within 2.5 nodule radii of the centre is a spicule; one
    that reaches further (or the crop edge) is a vessel and is ignored.
    """
    if not nodule.any():
        return 0.0
    protrusions = raw & ~ndi.binary_dilation(nodule)
    labels, n = ndi.label(protrusions, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return 0.0
    zz, yy, xx = np.ogrid[: raw.shape[0], : raw.shape[1], : raw.shape[2]]
    dist = np.sqrt(((zz - centre[0]) * spacing[0]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2
                   + ((xx - centre[2]) * spacing[2]) ** 2)
    far = np.zeros(raw.shape, bool)
    far[dist > 2.5 * radius_mm] = True
    edge = np.ones(raw.shape, bool)
    edge[1:-1, 1:-1, 1:-1] = False
    vessel_labels = np.unique(labels[(far | edge) & (labels > 0)])
    spicule = (labels > 0) & ~np.isin(labels, vessel_labels)
    return float(spicule.sum() / nodule.sum())


def measure_nodule(volume_hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float],
                   seed_zyx_vox: tuple[int, int, int], approx_diameter_mm: float,
                   spiculation_cutoff: float = SPICULATION_CUTOFF) -> NoduleMeasurement | None:
    """Segment and measure the nodule at a seed; None when nothing nodule-like is there."""
    spacing = tuple(abs(float(s)) for s in spacing_zyx_mm)
    half_mm = max(20.0, 1.6 * approx_diameter_mm + 6.0)
    crop = tuple(slice(max(int(c) - int(np.ceil(half_mm / s)), 0), min(int(c) + int(np.ceil(half_mm / s)) + 1, n))
                 for c, s, n in zip(seed_zyx_vox, spacing, volume_hu.shape))
    hu = volume_hu[crop].astype(np.float32)
    seed = tuple(int(c) - sl.start for c, sl in zip(seed_zyx_vox, crop))
    lung = hu[hu < LUNG_BELOW_HU]
    background = float(np.median(lung)) if lung.size > 50 else DEFAULT_LUNG_HU
    smooth = ndi.gaussian_filter(hu, 0.7)
    # move the seed to the densest nearby voxel (the detector works on a coarser grid)
    r = [max(1, int(round(2.0 / s))) for s in spacing]
    win = tuple(slice(max(c - q, 0), c + q + 1) for c, q in zip(seed, r))
    local = np.unravel_index(int(np.argmax(smooth[win])), smooth[win].shape)
    seed = tuple(int(a + w.start) for a, w in zip(local, win))

    solid_raw = _grow(hu, 0.5 * (background + SOLID_LEVEL_HU), seed)
    glass_raw = _grow(hu, 0.5 * (background + GROUND_GLASS_LEVEL_HU), seed)
    solid, solid_r, solid_c = _separate(solid_raw, seed, spacing)
    glass, glass_r, glass_c = _separate(glass_raw, seed, spacing)
    if _has_ground_glass(solid, glass, spacing):
        raw, mask, inscribed, centre = glass_raw, glass, glass_r, glass_c
    else:
        raw, mask, inscribed, centre = solid_raw, solid, solid_r, solid_c
    if not mask.any():
        return None
    voxel_mm3 = float(np.prod(spacing))
    volume = float(mask.sum() * voxel_mm3)
    long_axis, short_axis, _ = axial_diameters(mask, spacing)
    core = solid_component(mask, hu, spacing, vessel_hu=0.5 * (background + SOLID_LEVEL_HU))
    core_d = sphere_diameter(float(core.sum() * voxel_mm3))
    nodule_type = classify_type(core_d, sphere_diameter(volume))
    score = spiculation_score(raw, mask, centre, max(inscribed, sphere_diameter(volume) / 2), spacing)
    centroid = ndi.center_of_mass(mask)
    return NoduleMeasurement(
        centre_zyx_vox=tuple(float(c + sl.start) for c, sl in zip(centroid, crop)),
        long_axis_mm=long_axis, short_axis_mm=short_axis, volume_mm3=volume,
        mean_hu=float(hu[mask].mean()), solid_core_diameter_mm=core_d, nodule_type=nodule_type,
        spiculation_score=score, spiculated=score >= spiculation_cutoff, crop=crop, mask=mask,
    )


def lung_mask_from_hu(volume_hu: np.ndarray, air_below_hu: float = -400.0) -> np.ndarray:
    """Both lungs (bool, z y x): air inside the body, holes (vessels, nodules) filled per slice.

    Air connected in-plane to the image border is outside the body; remaining air components
    smaller than 5% of the largest are dropped (bowel gas, noise).
    """
    air = volume_hu < air_below_hu
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndi.generate_binary_structure(2, 1)
    labels, _ = ndi.label(air, structure=in_plane)
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    inside = air & ~np.isin(labels, border[border > 0])
    labels, n = ndi.label(inside)
    if n == 0:
        return inside
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.nonzero(sizes >= 0.05 * sizes.max())[0]
    lungs = np.isin(labels, keep)
    return ndi.binary_fill_holes(lungs, structure=in_plane)


def lung_centroid_xyz_mm(volume_hu: np.ndarray, spacing_zyx_mm, origin_xyz_mm, step: int = 2
                         ) -> tuple[float, float, float] | None:
    """The lungs' centre of mass in patient coordinates (mm; axial slices, identity in-plane
    orientation), from every `step`-th voxel: what aligns a scan with the patient's prior
    (pathways.lung_growth). None when no lung is found."""
    mask = lung_mask_from_hu(np.asarray(volume_hu)[::step, ::step, ::step])
    if not mask.any():
        return None
    z, y, x = ndi.center_of_mass(mask)
    return tuple(float(o + c * step * float(s)) for o, c, s in
                 zip(origin_xyz_mm, (x, y, z), (spacing_zyx_mm[2], spacing_zyx_mm[1], spacing_zyx_mm[0])))
