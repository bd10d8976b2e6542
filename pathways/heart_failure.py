"""Heart failure pathway rules: LV volumes and LVEF from echo, coronary calcium from cardiac CT.

Pure numpy/scipy over masks and HU arrays; no I/O.

Sources
- Chamber quantification: Lang RM, Badano LP, Mor-Avi V, et al. "Recommendations for cardiac
  chamber quantification by echocardiography in adults: an update from the American Society
  of Echocardiography and the European Association of Cardiovascular Imaging." J Am Soc
  Echocardiogr 2015;28:1-39.e14 (section 1.2, LV volumes, and Table 1). Biplane method of
  discs (modified Simpson's rule) is recommended; the single-plane apical four-chamber form
  (circular discs) and the area-length method V = 0.85 * A^2 / L are the fall-backs when
  only one view exists. End-diastole: the frame with the largest LV cavity; end-systole: the
  frame with the smallest (Lang 2015, "LV size" and Table 1 notes).
- LVEF categories: McDonagh TA, et al. "2021 ESC Guidelines for the diagnosis and treatment of
  acute and chronic heart failure." Eur Heart J 2021;42:3599-3726, Table 3: HFrEF LVEF <= 40%,
  HFmrEF 41-49%, HFpEF >= 50% (with symptoms and signs of heart failure). NICE NG106 (2018,
  "Terms used in this guideline") defines HFrEF as an ejection fraction below 40% and has no
  mildly-reduced category; radpath applies the ESC 2021 cut-offs, on the EF rounded to a whole
  percent as echo reports state it. An EF category is not a diagnosis of heart failure.
- Agatston score: Agatston AS, Janowitz WR, Hildner FJ, et al. "Quantification of coronary
  artery calcium using ultrafast computed tomography." J Am Coll Cardiol 1990;15:827-832:
  3 mm contiguous slices; pixels >= 130 HU; lesions >= 1 mm^2 (the paper used 2 adjacent pixels,
  1.02 mm^2); per slice and lesion, area (mm^2) x density factor from the lesion's peak HU
  (1: 130-199, 2: 200-299, 3: 300-399, 4: >= 400); summed over slices and lesions.
  Other slice increments: the score assumes 3 mm increments; radpath scales it by
  increment / 3 mm and marks it non-standard (the SCCT guideline on CAC scoring of chest CT,
  Hecht HS et al., J Cardiovasc Comput Tomogr 2017;11:74-84, states the standard protocol is
  2.5-3 mm slices and that thinner slices raise scores). 2.5-3.0 mm counts as standard.
- CAC-DRS: Hecht HS, Blaha MJ, Kazerooni EA, et al. "CAC-DRS: Coronary Artery Calcium Data and
  Reporting System. An expert consensus document of the Society of Cardiovascular Computed
  Tomography (SCCT)." J Cardiovasc Comput Tomogr 2018;12:185-191: A0 = 0, A1 = 1-99,
  A2 = 100-299, A3 >= 300; modifier N = number of calcified vessels (LM, LAD, LCx, RCA).

Which objects count as coronary calcium (bone, chest wall, metal and valve excluded) and which
scans can be scored (120 kVp, no contrast): `pathways/coronary_candidates.py`, with its sources.

Not done here (documented, not handled): coronary territory segmentation (per-vessel scores
need vessel centrelines from elsewhere; without them only the total is reported), biplane
volumes (the A4C cine is the only view used), wall motion and diastolic function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

VolumeMethod = Literal["method-of-discs", "area-length"]
EfCategory = Literal["reduced", "mildly-reduced", "preserved"]
CacDrs = Literal["A0", "A1", "A2", "A3"]
VESSELS = ("LM", "LAD", "LCx", "RCA")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- Echo ------------------------------------------------------------------------------------
class CineRef(_Frozen):
    """An ultrasound cine loaded once and cached on local disk (npy, grey uint8 (frames, rows, cols))."""

    series_uid: str
    sop_instance_uid: str
    path: str
    n_frames: int
    rows: int
    columns: int
    cm_per_pixel: float  # from the calibrated 2D region (Physical Delta X = Y)
    region: tuple[int, int, int, int]  # min_x, min_y, max_x, max_y, pixels
    frame_time_ms: float | None = None
    heart_rate_bpm: int | None = None
    burned_in_annotation: str = ""  # YES | NO | "" not recorded (pathways.disclosure.burned_in_value)


class EchoRules(_Frozen):
    """Thresholds of the echo branch (defaults: the cited sources)."""

    volume_method: VolumeMethod = Field(default="method-of-discs", description="Lang 2015 section 1.2")
    n_discs: int = Field(default=20, ge=5, description="Lang 2015: 20 discs for the method of discs")
    reduced_max_percent: int = Field(default=40, description="ESC 2021 Table 3: HFrEF LVEF <= 40%")
    mildly_reduced_max_percent: int = Field(default=49, description="ESC 2021 Table 3: HFmrEF 41-49%")
    min_frames_measured: int = Field(default=8, ge=2, description="radpath: fewer segmented frames → not measurable")
    min_cavity_area_cm2: float = Field(default=4.0, gt=0, description="radpath: smaller masks are not an LV cavity")
    max_frame_change_p90: float = Field(
        default=0.25, gt=0,
        description="radpath QC, not a guideline: the 90th percentile of the frame-to-frame relative volume change; "
        "a real LV changes smoothly at >= 25 frames per cycle (synthetic cines: <= 0.07), an unstable "
        "segmentation jumps (the synthetic-trained model on a real cine: 0.46) → not measurable",
    )


class EchoAssessment(_Frozen):
    measurable: bool
    reason: str = ""  # why not measurable
    method: VolumeMethod = "method-of-discs"
    edv_ml: float | None = None
    esv_ml: float | None = None
    ef_percent: float | None = None  # unrounded
    ef_category: EfCategory | None = None
    ed_frame: int | None = None
    es_frame: int | None = None
    long_axis_ed_cm: float | None = None
    frames_measured: int = 0
    volumes_ml: tuple[float | None, ...] = ()
    recommendation: str = ""
    guideline: str = "ESC 2021 heart failure guideline, Table 3 (McDonagh et al., Eur Heart J 2021;42:3599-3726)"


def _principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, 1], vectors[:, 0]  # long axis, short axis (unit vectors)


def lv_volume_method_of_discs(mask: np.ndarray, cm_per_pixel: float, n_discs: int = 20) -> tuple[float, float]:
    """Single-plane method of discs (Lang 2015): V = pi/4 * sum(d_i^2) * L / n. Returns (ml, L cm).

    The long axis is the cavity's principal axis; each disc's diameter is the mean width of
    the mask over that disc's slab (slab area / slab height), so partial pixels average out.
    """
    points = np.argwhere(mask).astype(float) * cm_per_pixel
    if len(points) < 3:
        return 0.0, 0.0
    long_axis, _ = _principal_axes(points)
    along = points @ long_axis
    start, length = along.min() - cm_per_pixel / 2, np.ptp(along) + cm_per_pixel
    height = length / n_discs
    counts = np.bincount(np.minimum(((along - start) / height).astype(int), n_discs - 1), minlength=n_discs)
    diameters = counts * cm_per_pixel**2 / height
    return float(np.pi / 4 * np.sum(diameters**2) * height), float(length)


def lv_volume_area_length(mask: np.ndarray, cm_per_pixel: float) -> tuple[float, float]:
    """Single-plane area-length method (Lang 2015): V = 0.85 * A^2 / L (8 / 3pi ≈ 0.85). (ml, L cm)."""
    points = np.argwhere(mask).astype(float) * cm_per_pixel
    if len(points) < 3:
        return 0.0, 0.0
    long_axis, _ = _principal_axes(points)
    along = points @ long_axis
    length = float(np.ptp(along) + cm_per_pixel)
    area = float(mask.sum()) * cm_per_pixel**2
    return 0.85 * area**2 / length, length


def ejection_fraction_percent(edv_ml: float, esv_ml: float) -> float:
    """EF = (EDV - ESV) / EDV x 100 (Lang 2015, section 1.2)."""
    if edv_ml <= 0:
        raise ValueError("end-diastolic volume must be positive")
    return (edv_ml - esv_ml) / edv_ml * 100.0


def classify_lvef(ef_percent: float, rules: EchoRules = EchoRules()) -> EfCategory:
    """ESC 2021 Table 3 on the EF rounded to a whole percent (half up): <=40, 41-49, >=50."""
    whole = int(np.floor(ef_percent + 0.5))
    if whole <= rules.reduced_max_percent:
        return "reduced"
    if whole <= rules.mildly_reduced_max_percent:
        return "mildly-reduced"
    return "preserved"


_EF_WORDS = {
    "reduced": "LVEF reduced (<= 40%): consistent with HFrEF if the clinical syndrome of heart failure is present "
    "(ESC 2021 Table 3). Specialist heart failure review (NICE NG106).",
    "mildly-reduced": "LVEF mildly reduced (41-49%): consistent with HFmrEF if the clinical syndrome of heart failure "
    "is present (ESC 2021 Table 3).",
    "preserved": "LVEF preserved (>= 50%): heart failure, if present, would be HFpEF, which needs evidence of "
    "structural or diastolic abnormality (ESC 2021 Table 3).",
}


class LvVolumes(_Frozen):
    """LV cavity volume and long axis per frame (None: no cavity large enough in that frame)."""

    method: VolumeMethod
    volumes_ml: tuple[float | None, ...]
    long_axis_cm: tuple[float | None, ...]


def measure_lv_volumes(lv_masks: np.ndarray, cm_per_pixel: float, rules: EchoRules = EchoRules()) -> LvVolumes:
    """Single-plane volume of every frame's LV cavity mask, by the rules' method (Lang 2015)."""
    min_pixels = rules.min_cavity_area_cm2 / cm_per_pixel**2
    volumes: list[float | None] = []
    lengths: list[float | None] = []
    for mask in lv_masks:
        if mask.sum() < min_pixels:
            volumes.append(None)
            lengths.append(None)
            continue
        if rules.volume_method == "method-of-discs":
            v, length = lv_volume_method_of_discs(mask, cm_per_pixel, rules.n_discs)
        else:
            v, length = lv_volume_area_length(mask, cm_per_pixel)
        volumes.append(round(v, 2))
        lengths.append(round(length, 3))
    return LvVolumes(method=rules.volume_method, volumes_ml=tuple(volumes), long_axis_cm=tuple(lengths))


def assess_lv_function(lv: LvVolumes, rules: EchoRules = EchoRules()) -> EchoAssessment:
    """ED = largest volume, ES = smallest (Lang 2015); EF and its ESC 2021 category.

    Not measurable, with the reason, when too few frames hold a cavity or the segmentation is
    unstable across frames. Whether the volumes and length are plausible for an adult LV is
    the model card's `outputs` check (the flow applies it).
    """
    volumes = lv.volumes_ml
    measured = [k for k, v in enumerate(volumes) if v is not None]
    if len(measured) < rules.min_frames_measured:
        return EchoAssessment(
            measurable=False, method=lv.method, frames_measured=len(measured), volumes_ml=volumes,
            reason=f"the LV cavity was segmented in {len(measured)} frames, fewer than {rules.min_frames_measured}",
            recommendation="LV volumes and LVEF not measurable by the model: echocardiographer review.",
        )
    series = np.array([volumes[k] for k in measured], float)
    change = np.abs(np.diff(series)) / np.maximum(series[:-1], series[1:])
    p90 = float(np.percentile(change, 90))
    if p90 > rules.max_frame_change_p90:
        return EchoAssessment(
            measurable=False, method=lv.method, frames_measured=len(measured), volumes_ml=volumes,
            reason=f"the LV segmentation is unstable across frames (90th percentile volume change {p90:.0%} per frame, "
            f"above {rules.max_frame_change_p90:.0%})",
            recommendation="LV volumes and LVEF not measurable by the model: echocardiographer review.",
        )
    ed = max(measured, key=lambda k: volumes[k])
    es = min(measured, key=lambda k: volumes[k])
    edv, esv = float(volumes[ed]), float(volumes[es])
    ef = ejection_fraction_percent(edv, esv)
    category = classify_lvef(ef, rules)
    return EchoAssessment(
        measurable=True, method=lv.method, edv_ml=round(edv, 1), esv_ml=round(esv, 1),
        ef_percent=round(ef, 2), ef_category=category, ed_frame=ed, es_frame=es,
        long_axis_ed_cm=lv.long_axis_cm[ed], frames_measured=len(measured), volumes_ml=volumes,
        recommendation=_EF_WORDS[category],
    )


def assess_echo(lv_masks: np.ndarray, cm_per_pixel: float, rules: EchoRules = EchoRules()) -> EchoAssessment:
    """Masks to assessment in one call (evaluation and tests)."""
    return assess_lv_function(measure_lv_volumes(lv_masks, cm_per_pixel, rules), rules)


# --- Cardiac CT: Agatston and CAC-DRS -----------------------------------------------------------
class CalciumRules(_Frozen):
    threshold_hu: float = Field(default=130.0, description="Agatston 1990: 130 HU")
    min_lesion_area_mm2: float = Field(default=1.0, description="Agatston 1990: 1 mm^2 (2 pixels, 1.02 mm^2)")
    reference_increment_mm: float = Field(default=3.0, description="Agatston 1990: 3 mm contiguous slices")
    standard_increment_range_mm: tuple[float, float] = Field(default=(2.5, 3.0), description="SCCT 2017: 2.5-3 mm")
    max_lesion_volume_mm3: float = Field(
        default=3000.0, gt=0, description="radpath: larger connected >= 130 HU structures are bone, not coronary calcium"
    )
    max_vessel_distance_mm: float = Field(default=10.0, gt=0, description="radpath: farther from every centreline → unassigned")
    # Which objects are coronary calcium, and which scans can be scored (pathways/coronary_candidates.py)
    reference_kvp: float = Field(default=120.0, description="Agatston 1990 / SCCT 2017: 120 kVp; other KVP → not measurable")
    min_blood_pool_ml: float = Field(
        default=50.0, gt=0, description="radpath: an enhanced blood pool (chambers, aorta) is hundreds of ml; bone nearer the hull edge"
    )
    blood_pool_depth_mm: float = Field(
        default=30.0, gt=0, description="radpath: the heart's centre lies this deep inside the lungs' hull; spine and sternum at its edge"
    )
    edge_margin_mm: float = Field(default=1.0, ge=0, description="radpath: an object this near the field's edge is cut by it")
    bone_margin_mm: float = Field(default=3.0, ge=0, description="radpath: this near a large bony object → bone")
    metal_min_hu: float = Field(
        default=2000.0, description="radpath: stents and wires read far above calcified plaque (peak HU at or above → metal)"
    )
    ring_min_slices: int = Field(default=2, ge=1, description="radpath: a hole inside the object on this many slices → stent")
    dense_min_hu: float = Field(default=1000.0, description="radpath: with `stent_min_length_mm`, a long dense object is a stent")
    stent_min_length_mm: float = Field(default=8.0, gt=0, description="radpath: coronary stents are 8-38 mm long")
    metal_margin_mm: float = Field(default=5.0, ge=0, description="radpath: a fragment this near metal is part of it (one slice away)")
    shell_mm: float = Field(default=5.0, gt=1, description="radpath: the shell whose fat fraction says epicardial")
    min_epicardial_fraction: float = Field(
        default=0.3, ge=0, le=1,
        description="radpath: coronary arteries run in epicardial fat; less fat (-190 to -30 HU) around → valve, myocardium, chest wall",
    )


class CalciumLesion(_Frozen):
    index: int = Field(ge=1)
    agatston: float
    peak_hu: float
    area_mm2: float  # summed over the slices where it counts
    volume_mm3: float
    slices: tuple[int, ...]
    centre_xyz_mm: tuple[float, float, float]
    vessel: str | None = None  # LM | LAD | LCx | RCA, where centrelines were given


class ExcludedObject(_Frozen):
    """A >= 130 HU object that is not coronary calcium, and why (pathways/coronary_candidates.py)."""

    reason: str  # coronary_candidates.Exclusion
    peak_hu: float
    volume_mm3: float
    centre_xyz_mm: tuple[float, float, float]


class CalciumAssessment(_Frozen):
    measurable: bool = True
    reason: str = ""  # why not measurable (tube voltage, contrast)
    agatston_total: float | None = None
    cac_drs: CacDrs | None = None
    vessels_labelled: bool = False
    agatston_by_vessel: dict[str, float] = {}
    n_vessels: int | None = None  # CAC-DRS N modifier, where vessels are labelled
    lesions: tuple[CalciumLesion, ...] = ()
    excluded: tuple[ExcludedObject, ...] = ()  # objects >= 130 HU and small enough, but not coronary
    slice_increment_mm: float
    standard_increment: bool
    increment_factor: float  # increment / 3 mm, applied to every lesion score
    recommendation: str
    guideline: str = "CAC-DRS (Hecht et al., J Cardiovasc Comput Tomogr 2018;12:185-191); Agatston 1990"


def agatston_weight(peak_hu: float, threshold_hu: float = 130.0) -> int:
    """Agatston 1990 density factor: 1 (130-199 HU), 2 (200-299), 3 (300-399), 4 (>= 400); 0 below."""
    if peak_hu >= 400:
        return 4
    if peak_hu >= 300:
        return 3
    if peak_hu >= 200:
        return 2
    return 1 if peak_hu >= threshold_hu else 0


def slice_scores(hu_slice: np.ndarray, pixel_area_mm2: float, rules: CalciumRules = CalciumRules()) -> list[tuple[float, float, int, float]]:
    """Per 2D lesion (8-connected) of one slice: (area mm^2, peak HU, weight, area x weight)."""
    above = hu_slice >= rules.threshold_hu
    labels, count = ndimage.label(above, structure=np.ones((3, 3)))
    out = []
    for k in range(1, count + 1):
        pixels = hu_slice[labels == k]
        area = pixels.size * pixel_area_mm2
        if area >= rules.min_lesion_area_mm2:
            weight = agatston_weight(float(pixels.max()), rules.threshold_hu)
            out.append((area, float(pixels.max()), weight, area * weight))
    return out


def cac_drs(agatston: float) -> CacDrs:
    """CAC-DRS (Hecht 2018) Agatston category: A0 = 0, A1 = 1-99, A2 = 100-299, A3 >= 300."""
    if agatston <= 0:
        return "A0"
    if agatston < 100:
        return "A1"
    if agatston < 300:
        return "A2"
    return "A3"


_CAC_WORDS = {
    "A0": "CAC-DRS A0: no coronary calcium; very low risk (Hecht 2018).",
    "A1": "CAC-DRS A1: mild coronary calcium; mildly increased risk (Hecht 2018).",
    "A2": "CAC-DRS A2: moderate coronary calcium; moderately increased risk (Hecht 2018).",
    "A3": "CAC-DRS A3: severe coronary calcium; moderately to severely increased risk (Hecht 2018).",
}


def _nearest_vessel(centre_zyx: np.ndarray, centrelines: Mapping[str, np.ndarray], max_mm: float) -> str | None:
    best, best_d = None, max_mm
    for vessel, points in centrelines.items():
        d = float(np.min(np.linalg.norm(np.asarray(points, float) - centre_zyx, axis=1)))
        if d <= best_d:
            best, best_d = vessel, d
    return best


def assess_calcium(
    hu: np.ndarray,
    spacing_zyx_mm: Sequence[float],
    origin_xyz_mm: Sequence[float],
    rules: CalciumRules = CalciumRules(),
    centrelines_zyx_mm: Mapping[str, np.ndarray] | None = None,
    kvp_values: Sequence[float] = (120.0,),
    contrast_agent: str = "",
) -> CalciumAssessment:
    """Agatston score of an axial (z, y, x) HU volume; see `score_calcium`."""
    return score_calcium(hu, spacing_zyx_mm, origin_xyz_mm, rules, centrelines_zyx_mm, kvp_values, contrast_agent)[0]


def score_calcium(
    hu: np.ndarray,
    spacing_zyx_mm: Sequence[float],
    origin_xyz_mm: Sequence[float],
    rules: CalciumRules = CalciumRules(),
    centrelines_zyx_mm: Mapping[str, np.ndarray] | None = None,
    kvp_values: Sequence[float] = (120.0,),
    contrast_agent: str = "",
) -> tuple[CalciumAssessment, np.ndarray]:
    """Agatston score per lesion and (with centrelines) per vessel, and a uint8 lesion label mask.

    A lesion is a 3D connected >= threshold region no larger than `max_lesion_volume_mm3` that
    `coronary_candidates.exclusion` does not rule out (bone, chest wall, field edge, metal, not
    epicardial); it is scored slice by slice (Agatston 1990). A scan at another tube voltage
    (`kvp_values`: the series' KVP) or with contrast (`contrast_agent`: the images' Contrast/Bolus
    Agent, or the image itself) is not measurable. `centrelines_zyx_mm`
    maps vessel name to points (N, 3) in the volume's (z, y, x) mm frame plus origin.
    """
    from pathways.coronary_candidates import ChestContext, acquisition_problem, candidate_objects, contrast_problem

    dz, dy, dx = (float(v) for v in spacing_zyx_mm)
    pixel_area = dy * dx
    factor = dz / rules.reference_increment_mm
    low, high = rules.standard_increment_range_mm
    standard = low - 1e-6 <= dz <= high + 1e-6
    geometry = {"slice_increment_mm": dz, "standard_increment": standard, "increment_factor": round(factor, 4)}
    problem = acquisition_problem(tuple(float(v) for v in kvp_values), rules)
    context = None if problem else ChestContext(hu, (dz, dy, dx), rules.threshold_hu, rules.max_lesion_volume_mm3)
    problem = problem or contrast_problem(context, contrast_agent, rules)
    if problem:
        return CalciumAssessment(
            measurable=False, reason=problem, **geometry,
            recommendation="Coronary calcium not measurable by radpath: " + problem + ". Radiologist review.",
        ), np.zeros(hu.shape, np.uint8)
    labels = context.labels  # 6-connected in 3D, >= threshold
    origin_zyx = np.array([origin_xyz_mm[2], origin_xyz_mm[1], origin_xyz_mm[0]], float)
    lesions: list[tuple[CalciumLesion, int]] = []
    excluded: list[ExcludedObject] = []
    for candidate in candidate_objects(context, rules):
        k, box, component, volume, peak = (candidate.label, candidate.box, candidate.component,
                                           candidate.volume_mm3, candidate.peak_hu)
        if candidate.exclusion:
            centre = origin_zyx + (np.argwhere(component).mean(axis=0) + [b.start for b in box]) * [dz, dy, dx]
            excluded.append(ExcludedObject(reason=candidate.exclusion, peak_hu=peak, volume_mm3=round(volume, 2),
                                           centre_xyz_mm=tuple(float(v) for v in centre[::-1])))
            continue
        values = np.where(component, hu[box], rules.threshold_hu - 1)
        score, area, counted = 0.0, 0.0, []
        for s in range(values.shape[0]):
            parts = slice_scores(values[s], pixel_area, rules)
            if parts:
                score += sum(p[3] for p in parts)
                area += sum(p[0] for p in parts)
                counted.append(box[0].start + s)
        if not counted:
            continue
        idx = np.argwhere(component) + [b.start for b in box]
        centre_zyx_mm = origin_zyx + idx.mean(axis=0) * [dz, dy, dx]
        vessel = (
            _nearest_vessel(centre_zyx_mm, centrelines_zyx_mm, rules.max_vessel_distance_mm)
            if centrelines_zyx_mm else None
        )
        lesions.append((CalciumLesion(
            index=1, agatston=score * factor, peak_hu=peak,
            area_mm2=round(area, 3), volume_mm3=round(volume, 2), slices=tuple(counted),
            centre_xyz_mm=tuple(float(v) for v in centre_zyx_mm[::-1]), vessel=vessel,
        ), k))
    found = sorted(lesions, key=lambda item: -item[0].agatston)[:255]
    mask = np.zeros(hu.shape, np.uint8)
    for i, (_, k) in enumerate(found, start=1):
        mask[labels == k] = i
    lesions = [les.model_copy(update={"index": i}) for i, (les, _) in enumerate(found, start=1)]
    total = float(sum(les.agatston for les in lesions))
    category = cac_drs(total)
    labelled = bool(centrelines_zyx_mm)
    by_vessel = {v: float(sum(les.agatston for les in lesions if les.vessel == v)) for v in VESSELS} if labelled else {}
    n_vessels = sum(1 for v in by_vessel.values() if v > 0) if labelled else None
    words = _CAC_WORDS[category]
    if labelled and n_vessels:
        words += f" N{n_vessels}: calcium in {n_vessels} coronary {'artery' if n_vessels == 1 else 'arteries'}."
    return CalciumAssessment(
        agatston_total=total, cac_drs=category, vessels_labelled=labelled, agatston_by_vessel=by_vessel,
        n_vessels=n_vessels, lesions=tuple(lesions), excluded=tuple(excluded), **geometry, recommendation=words,
    ), mask


# --- For the demo table ------------------------------------------------------------------------
def compare_to_truth(result_assessment: dict, truth: dict) -> str:
    """One line comparing a stored assessment (echo or calcium) with a synthetic study's truth."""
    if "agatston_total" in result_assessment:
        got, want = result_assessment["agatston_total"], truth.get("agatston_total")
        if got is None:
            return f"not measurable ({result_assessment.get('reason', '')}); truth Agatston {want:.1f}"
        return f"Agatston {got:.1f} vs truth {want:.1f} ({result_assessment['cac_drs']} vs {cac_drs(want)})"
    if not result_assessment.get("measurable"):
        return f"not measurable ({result_assessment.get('reason', '')}); truth EF {truth.get('ef', 0) * 100:.1f}%"
    ef, want = result_assessment["ef_percent"], truth["ef"] * 100
    return (
        f"EF {ef:.1f}% vs truth {want:.1f}% (error {ef - want:+.1f}); EDV {result_assessment['edv_ml']:.0f} vs "
        f"{truth['edv_ml']:.0f} ml, ESV {result_assessment['esv_ml']:.0f} vs {truth['esv_ml']:.0f} ml"
    )
