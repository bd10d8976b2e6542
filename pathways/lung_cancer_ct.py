"""Lung cancer CT clinical rules: Brock malignancy risk and BTS 2015 nodule follow-up.

Pure functions over the value objects in `pathways.findings`; no I/O.

Sources
- Brock (PanCan) model: McWilliams A, et al. "Probability of cancer in pulmonary nodules
  detected on first screening CT." N Engl J Med 2013;369:910-919, supplementary appendix,
  model 2b (full model with spiculation). Coefficients cross-checked against three
  independent public calculator implementations.
- BTS 2015: Callister MEJ, et al. "British Thoracic Society guidelines for the investigation
  and management of pulmonary nodules." Thorax 2015;70(Suppl 2):ii1-ii54, Algorithm 1
  (solid nodules) and Algorithm 2 (subsolid nodules). BTS recommendations are not numbered;
  each rule below names its algorithm and summary section. Thresholds cross-checked against
  the BTS-vs-Fleischner comparison tables (Thorax, Table 1; PMC6784443 Table 4;
  PMC7177089 Table 2).
- NICE NG12 "Suspected cancer: recognition and referral" (2015), recommendation 1.1.1:
  suspected cancer pathway referral when imaging findings suggest lung cancer.

Size conventions
- Brock uses the nodule's maximum diameter (`Nodule.long_axis_mm`).
- BTS prefers semi-automatic volumetry and falls back to maximum axial diameter where
  volumetry is unavailable or unreliable (BTS 2015 summary, "Nodule size measurement");
  it does not use the mean of long and short axes (that is Fleischner 2017's convention).
  `LungThresholds.size_method` chooses; a nodule with no volume falls back to diameter.
  Subsolid nodules are sized by maximum diameter (Algorithm 2 thresholds are in mm).

Patient context
- BTS 2015 covers adults (>= 18 years); the "< 35 years" exclusion belongs to Fleischner
  2017, not BTS, so it is not applied. Under 18 -> "clinical-review".
- Unknown age -> no Brock risk; solid nodules >= 8 mm / 300 mm3 then need "clinical-review".
- Unknown sex (`"U"`) -> Brock is computed with the higher-risk value (female), so the risk
  is never understated.
- Known malignancy: BTS advises considering previous malignancy in the risk assessment
  (summary, "Route of detection", grade D), which Brock cannot express; the category is
  unchanged and the recommendation asks for MDT review. Not expressible here (documented,
  not handled): benign calcification / macroscopic fat, perifissural nodules, fitness for
  treatment and patient preference. Growth and volume-doubling time against the prior scan:
  pathways/lung_growth.py (`compare_to_prior`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pathways.lung_growth import GrowthThresholds, compare_with_prior
from pathways.findings import (
    LungAssessment,
    Nodule,
    NoduleAssessment,
    NoduleType,
    PatientContext,
)

# --- Brock (PanCan) model 2b: McWilliams 2013 NEJM, supplementary appendix, full model with spiculation
BROCK_AGE_CENTRE = 62.0  # age centred at 62 years
BROCK_AGE = 0.0287  # per year of (age - 62)
BROCK_FEMALE = 0.6011  # female sex
BROCK_FAMILY_HISTORY = 0.2961  # family history of lung cancer
BROCK_EMPHYSEMA = 0.2953  # emphysema on CT
BROCK_SIZE = -5.3854  # times ((size_mm / 10) ** -0.5 - 1.58113883)
BROCK_SIZE_CENTRE = 1.58113883  # (4 mm / 10) ** -0.5: size centred at 4 mm
BROCK_TYPE = {"solid": 0.0, "part-solid": 0.377, "ground-glass": -0.1276}  # vs solid; ground-glass = "nonsolid"
BROCK_UPPER_LOBE = 0.6581  # nodule in an upper lobe
BROCK_COUNT = -0.0824  # per nodule of (count - 4)
BROCK_COUNT_CENTRE = 4
BROCK_SPICULATION = 0.7729  # spiculation present
BROCK_CONSTANT = -6.7892

# Input ranges: BTS 2015 covers adults; a nodule is at most 3 cm (BTS 2015 / Fleischner glossary
# definition), and below 1 mm the size term is meaningless.
BROCK_AGE_RANGE = (18, 120)
BROCK_DIAMETER_RANGE_MM = (1.0, 30.0)

# A study in which the detector found no nodule: never "no-follow-up" (an all-clear from a miss,
# hazard H-11). The AI makes no follow-up recommendation of its own; "no follow-up" without a
# nodule is only the radiologist's to give. Never aggregated with the nodule categories.
NO_NODULE_DETECTED = "no-nodule-detected"
# Categories, least to most intensive (aggregation over nodules picks the highest).
CATEGORY_ORDER = (NO_NODULE_DETECTED, "no-follow-up", "ct-12-months", "ct-3-months", "clinical-review", "pet-ct", "mass")
_RANK = {code: rank for rank, code in enumerate(CATEGORY_ORDER)}
_BTS = "BTS 2015"


class LungThresholds(BaseModel):
    """The pathway designer's thresholds; defaults are the guideline values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size_method: Literal["volume", "diameter"] = Field(
        default="volume",
        description="BTS 2015 'Nodule size measurement': prefer volumetry; maximum axial diameter if unavailable",
    )
    adult_age_years: int = Field(default=18, ge=0, description="BTS 2015 scope: adults aged 18 and over")
    solid_no_follow_up_below_mm: float = Field(
        default=5.0, gt=0, description="BTS 2015 Algorithm 1: solid < 5 mm maximum diameter -> no follow-up"
    )
    solid_no_follow_up_below_mm3: float = Field(
        default=80.0, gt=0, description="BTS 2015 Algorithm 1: solid < 80 mm3 -> no follow-up"
    )
    solid_ct_12_months_below_mm: float = Field(
        default=6.0, gt=0, description="BTS 2015 Algorithm 1: solid 5 to < 6 mm (diameter only) -> CT at 12 months"
    )
    solid_brock_from_mm: float = Field(
        default=8.0, gt=0, description="BTS 2015 Algorithm 1: solid >= 8 mm -> Brock risk assessment"
    )
    solid_brock_from_mm3: float = Field(
        default=300.0, gt=0, description="BTS 2015 Algorithm 1: solid >= 300 mm3 -> Brock risk assessment"
    )
    pet_ct_brock_probability: float = Field(
        default=0.10,
        gt=0,
        lt=1,
        description=(
            "BTS 2015 Algorithm 1 (solid): Brock >= 10% -> PET-CT; < 10% -> CT surveillance."
            " Algorithm 2 (subsolid, persistent at 3 months): >= 10% -> consider biopsy/resection"
        ),
    )
    subsolid_follow_up_from_mm: float = Field(
        default=5.0, gt=0, description="BTS 2015 Algorithm 2: subsolid < 5 mm -> no follow-up; >= 5 mm -> CT at 3 months"
    )
    mass_above_mm: float = Field(
        default=30.0,
        gt=0,
        description=(
            "BTS 2015 definition: a nodule is at most 3 cm, a mass is a lesion > 3 cm (strictly above;"
            " exactly 30.0 mm is a nodule) -> NICE NG12 1.1.1 urgent referral"
        ),
    )

    growth: GrowthThresholds = Field(
        default=GrowthThresholds(), description="BTS 2015 'Nodule growth': comparison with the prior chest CT (pathways/lung_growth.py)")

    @model_validator(mode="after")
    def _ordered(self) -> LungThresholds:
        mm = (self.solid_no_follow_up_below_mm, self.solid_ct_12_months_below_mm, self.solid_brock_from_mm)
        if not (mm[0] <= mm[1] <= mm[2] < self.mass_above_mm):
            raise ValueError("solid diameter thresholds must satisfy no-follow-up <= 12-month <= Brock < mass")
        if not self.solid_no_follow_up_below_mm3 < self.solid_brock_from_mm3:
            raise ValueError("solid volume thresholds must satisfy no-follow-up < Brock")
        return self


def bts_algorithm(nodule_type: NoduleType) -> str:
    """The BTS 2015 algorithm that manages a nodule of this type.

    Callister et al., Thorax 2015;70:ii1-ii54: Algorithm 1 is for solid nodules, Algorithm 2
    for subsolid ones (pure ground-glass and part-solid).
    """
    return "Algorithm 1" if nodule_type == "solid" else "Algorithm 2"


def is_mass(long_axis_mm: float, thresholds: LungThresholds) -> bool:
    """A lesion strictly above the mass threshold is a mass, not a nodule.

    BTS 2015 (Callister et al., Thorax 2015;70:ii1-ii54, "Definitions"): a nodule is a focal
    opacity up to 3 cm; a lesion > 3 cm is a mass. 30.0 mm is therefore still a nodule.
    The comparison is made on the size as reported (0.1 mm), so a lesion the report calls
    "30.0 mm" is never called a mass.
    """
    return round(long_axis_mm, 1) > thresholds.mass_above_mm


def brock_probability(
    *,
    age_years: float,
    female: bool,
    family_history: bool,
    emphysema: bool,
    diameter_mm: float,
    nodule_type: NoduleType,
    upper_lobe: bool,
    nodule_count: int,
    spiculated: bool,
) -> float:
    """Probability (0-1) that a nodule is cancer: Brock/PanCan full model with spiculation."""
    if not BROCK_AGE_RANGE[0] <= age_years <= BROCK_AGE_RANGE[1]:
        raise ValueError(f"age must be within {BROCK_AGE_RANGE} years for the Brock model")
    if not BROCK_DIAMETER_RANGE_MM[0] <= diameter_mm <= BROCK_DIAMETER_RANGE_MM[1]:
        raise ValueError(f"nodule diameter must be within {BROCK_DIAMETER_RANGE_MM} mm for the Brock model")
    if nodule_count < 1:
        raise ValueError("nodule count must be at least 1")
    if nodule_type not in BROCK_TYPE:
        raise ValueError(f"unknown nodule type {nodule_type!r}")
    logit = (
        BROCK_CONSTANT
        + BROCK_AGE * (age_years - BROCK_AGE_CENTRE)
        + BROCK_FEMALE * female
        + BROCK_FAMILY_HISTORY * family_history
        + BROCK_EMPHYSEMA * emphysema
        + BROCK_SIZE * ((diameter_mm / 10.0) ** -0.5 - BROCK_SIZE_CENTRE)
        + BROCK_TYPE[nodule_type]
        + BROCK_UPPER_LOBE * upper_lobe
        + BROCK_COUNT * (nodule_count - BROCK_COUNT_CENTRE)
        + BROCK_SPICULATION * spiculated
    )
    return 1.0 / (1.0 + math.exp(-logit))


def nodule_brock(nodule: Nodule, patient: PatientContext, nodule_count: int) -> float | None:
    """Brock risk of one nodule in context, or None where the model cannot apply (age unknown, out of range)."""
    try:
        return brock_probability(
            age_years=patient.age_years if patient.age_years is not None else math.nan,
            female=patient.sex != "M",  # unknown sex: the higher-risk value
            family_history=patient.family_history_lung_cancer,
            emphysema=patient.emphysema,
            diameter_mm=nodule.long_axis_mm,
            nodule_type=nodule.nodule_type,
            upper_lobe=nodule.upper_lobe,
            nodule_count=nodule_count,
            spiculated=nodule.spiculated,
        )
    except ValueError:
        return None


def _risk(brock: float | None) -> str:
    return "Brock risk unavailable" if brock is None else f"Brock risk {brock:.1%}"


def bts_category(
    nodule: Nodule,
    brock: float | None,
    *,
    patient: PatientContext,
    thresholds: LungThresholds = LungThresholds(),
) -> tuple[str, str]:
    """The BTS 2015 category code and a one-sentence recommendation for one nodule."""
    t = thresholds
    code, sentence = _category(nodule, brock, patient, t)
    if patient.known_malignancy and code not in ("mass", "clinical-review"):
        sentence += (
            " Known malignancy: BTS 2015 advises weighing previous cancer in the risk assessment"
            " (Brock does not include it); discuss at MDT."
        )
    return code, sentence


def _category(nodule: Nodule, brock: float | None, patient: PatientContext, t: LungThresholds) -> tuple[str, str]:
    size = nodule.long_axis_mm
    if patient.age_years is not None and patient.age_years < t.adult_age_years:
        return "clinical-review", f"{_BTS} covers adults aged {t.adult_age_years}+: clinical review required."
    if is_mass(size, t):
        return "mass", (
            f"{size:.1f} mm lesion is a mass, not a nodule ({_BTS} definition): refer on the suspected"
            " lung cancer pathway (NICE NG12 1.1.1)."
        )
    if bts_algorithm(nodule.nodule_type) == "Algorithm 2":  # subsolid
        if size < t.subsolid_follow_up_from_mm:
            return "no-follow-up", f"Subsolid nodule < {t.subsolid_follow_up_from_mm:g} mm: no follow-up ({_BTS} Algorithm 2)."
        return "ct-3-months", (
            f"Subsolid nodule >= {t.subsolid_follow_up_from_mm:g} mm: CT at 3 months to confirm persistence; if"
            f" persistent, {_risk(brock)} guides CT at 1, 2 and 4 years (< {t.pet_ct_brock_probability:.0%})"
            f" or biopsy/resection ({_BTS} Algorithm 2)."
        )
    volume = nodule.volume_mm3 if t.size_method == "volume" and nodule.volume_mm3 > 0 else None
    if volume is not None:  # Algorithm 1, volumetry
        if volume < t.solid_no_follow_up_below_mm3:
            return "no-follow-up", f"Solid nodule < {t.solid_no_follow_up_below_mm3:g} mm3: no follow-up ({_BTS} Algorithm 1)."
        if volume < t.solid_brock_from_mm3:
            return "ct-3-months", (
                f"Solid nodule {t.solid_no_follow_up_below_mm3:g} to < {t.solid_brock_from_mm3:g} mm3: CT at 3 months"
                f" with volumetry ({_BTS} Algorithm 1)."
            )
    else:  # Algorithm 1, maximum axial diameter
        if size < t.solid_no_follow_up_below_mm:
            return "no-follow-up", f"Solid nodule < {t.solid_no_follow_up_below_mm:g} mm: no follow-up ({_BTS} Algorithm 1)."
        if size < t.solid_ct_12_months_below_mm:
            return "ct-12-months", (
                f"Solid nodule {t.solid_no_follow_up_below_mm:g} to < {t.solid_ct_12_months_below_mm:g} mm:"
                f" CT at 12 months ({_BTS} Algorithm 1)."
            )
        if size < t.solid_brock_from_mm:
            return "ct-3-months", (
                f"Solid nodule {t.solid_ct_12_months_below_mm:g} to < {t.solid_brock_from_mm:g} mm:"
                f" CT at 3 months ({_BTS} Algorithm 1)."
            )
    if brock is None:
        return "clinical-review", (
            f"Solid nodule at the Brock size threshold but Brock risk unavailable (age unknown or out of range):"
            f" clinical risk assessment required ({_BTS} Algorithm 1)."
        )
    if brock < t.pet_ct_brock_probability:
        return "ct-3-months", (
            f"Solid nodule, {_risk(brock)} < {t.pet_ct_brock_probability:.0%}: CT surveillance, first CT at"
            f" 3 months ({_BTS} Algorithm 1)."
        )
    return "pet-ct", (
        f"Solid nodule, {_risk(brock)} >= {t.pet_ct_brock_probability:.0%}: PET-CT and Herder risk"
        f" assessment ({_BTS} Algorithm 1)."
    )


def assess_lung_study(
    nodules: Sequence[Nodule],
    patient: PatientContext,
    thresholds: LungThresholds = LungThresholds(),
) -> LungAssessment:
    """Brock and BTS category per nodule; the study takes the most intensive category, plus the urgent flag."""
    count = len(nodules)
    assessed = []
    for nodule in nodules:
        brock = nodule_brock(nodule, patient, count)
        code, sentence = bts_category(nodule, brock, patient=patient, thresholds=thresholds)
        assessed.append(NoduleAssessment(nodule=nodule, brock_probability=brock, bts_category=code, recommendation=sentence))
    if not assessed:
        return LungAssessment(
            nodules=(),
            recommendation_code=NO_NODULE_DETECTED,
            recommendation=(
                "No pulmonary nodule detected by the AI. This is not an all-clear: the AI can miss"
                " nodules. Whether follow-up is needed is for the radiologist reading the images to decide."
            ),
            urgent=False,
        )
    # Most intensive category; ties go to the larger nodule, then the earlier one.
    worst = max(assessed, key=lambda a: (_RANK[a.bts_category], a.nodule.long_axis_mm, -a.nodule.index))
    reasons = tuple(reason for a in assessed for reason in _urgent_reasons(a, thresholds))
    return LungAssessment(
        nodules=tuple(assessed),
        recommendation_code=worst.bts_category,
        recommendation=f"Nodule {worst.nodule.index}: {worst.recommendation}",
        urgent=bool(reasons),
        urgent_reasons=reasons,
    )


def compare_to_prior(current: LungAssessment, prior: LungAssessment, prior_study_key: str,
                     thresholds: LungThresholds = LungThresholds(), *, prior_result_id: str | None = None,
                     prior_tracking: Mapping[int, str] | None = None) -> LungAssessment:
    """The current study's assessment compared with the patient's prior chest CT (BTS 2015 growth);
    matched nodules keep their `prior_tracking` UIDs (pathways.lung_growth.compare_with_prior)."""
    return compare_with_prior(current, prior, prior_study_key, thresholds.growth, rank=_RANK,
                              prior_result_id=prior_result_id, prior_tracking=prior_tracking)


def _urgent_reasons(a: NoduleAssessment, t: LungThresholds) -> list[str]:
    reasons = []
    i = a.nodule.index
    if is_mass(a.nodule.long_axis_mm, t):
        reasons.append(
            f"nodule {i}: {a.nodule.long_axis_mm:.1f} mm > {t.mass_above_mm:g} mm, a mass suggesting lung cancer"
            " (NICE NG12 1.1.1 suspected cancer pathway)"
        )
    if a.brock_probability is not None and a.brock_probability >= t.pet_ct_brock_probability:
        if a.nodule.nodule_type == "solid":
            action = f"{_BTS} {bts_algorithm(a.nodule.nodule_type)} PET-CT threshold"
        else:
            action = (
                f"{_BTS} {bts_algorithm(a.nodule.nodule_type)}: if persistent on the 3-month CT,"
                " consider biopsy or resection"
            )
        reasons.append(
            f"nodule {i}: Brock risk {a.brock_probability:.1%} >= {t.pet_ct_brock_probability:.0%} ({action})"
        )
    return reasons


def match_detections(truth: Sequence[dict], found: Sequence[dict]) -> tuple[int, int]:
    """(truth nodules found, false positives) for evaluation against synthetic truth.

    A detection matches the nearest unmatched truth nodule whose centre lies within
    max(its radius, 5 mm) — the same rule as models/lung_nodule/evaluate.py.
    """
    unmatched = list(found)
    hits = 0
    for t in truth:
        radius = max(t["diameter_mm"] / 2, 5.0)
        best = min(unmatched, key=lambda f: math.dist(f["centre_xyz_mm"], t["centre_xyz_mm"]), default=None)
        if best is not None and math.dist(best["centre_xyz_mm"], t["centre_xyz_mm"]) <= radius:
            hits += 1
            unmatched.remove(best)
    return hits, len(unmatched)


def compare_to_truth(result_assessment: dict, truth: dict) -> str:
    """One line for the demo table: nodules found against the synthetic truth."""
    found = [n["nodule"] for n in result_assessment["nodules"]]
    hits, false_positives = match_detections(truth["nodules"], found)
    brocks = [n["brock_probability"] for n in result_assessment["nodules"] if n["brock_probability"] is not None]
    brock = f"; max Brock {100 * max(brocks):.1f}%" if brocks else ""
    return f"{hits}/{len(truth['nodules'])} nodules found, {false_positives} false +{brock}{_vdt_vs_truth(result_assessment, truth)}"


def _vdt_vs_truth(result_assessment: dict, truth: dict) -> str:
    """For a follow-up with known growth: each growing nodule's VDT against the truth's."""
    true_vdt = {g["index"]: g["vdt_days"] for g in truth.get("growth", [])}
    centres = {n["nodule"]["index"]: n["nodule"]["centre_xyz_mm"] for n in result_assessment["nodules"]}
    parts = []
    for g in result_assessment.get("growth", []):
        if g["status"] != "growing" or g["index"] not in centres:
            continue
        nearest = min(truth["nodules"], key=lambda t: math.dist(t["centre_xyz_mm"], centres[g["index"]]), default=None)
        known = true_vdt.get(nearest["index"]) if nearest else None
        parts.append(f"VDT {g['vdt_days']:.0f} d" + (f" (truth {known:.0f})" if known else ""))
    return ("; " + ", ".join(parts)) if parts else ""
