"""Brock (McWilliams 2013, model 2b) and BTS 2015 follow-up rules, with worked values."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from pathways.findings import Nodule, PatientContext
from pathways.lung_cancer_ct import (
    CATEGORY_ORDER,
    NO_NODULE_DETECTED,
    LungThresholds,
    assess_lung_study,
    brock_probability,
    bts_category,
)

ADULT = PatientContext(age_years=65, sex="M")
DIAMETER = LungThresholds(size_method="diameter")


def nodule(
    long_axis_mm: float = 6.0,
    *,
    volume_mm3: float | None = None,
    nodule_type: str = "solid",
    lobe: str = "RLL",
    spiculated: bool = False,
    index: int = 1,
) -> Nodule:
    if volume_mm3 is None:  # a sphere of that diameter
        volume_mm3 = math.pi / 6 * long_axis_mm**3
    return Nodule(
        index=index,
        centre_zyx_vox=(10.0, 20.0, 30.0),
        centre_xyz_mm=(1.0, 2.0, 3.0),
        long_axis_mm=long_axis_mm,
        short_axis_mm=long_axis_mm * 0.8,
        mean_diameter_mm=long_axis_mm * 0.9,
        volume_mm3=volume_mm3,
        nodule_type=nodule_type,
        spiculated=spiculated,
        lobe=lobe,
        mean_hu=20.0,
        confidence=0.9,
    )


def expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- Brock: worked values ------------------------------------------------------------------------
# Each logit below is written out term by term from the published model 2b coefficients
# (McWilliams 2013 NEJM supplementary appendix), independently of the module's constants:
# -6.7892 constant, 0.0287*(age-62), 0.6011 female, 0.2961 family history, 0.2953 emphysema,
# -5.3854*((size/10)^-0.5 - 1.58113883), +0.377 part-solid / -0.1276 nonsolid, 0.6581 upper lobe,
# -0.0824*(count-4), 0.7729 spiculation.
WORKED = [
    # Reference patient: every centred term is zero, so logit = constant = -6.7892 -> 0.0011.
    (
        dict(age_years=62, female=False, family_history=False, emphysema=False, diameter_mm=4.0,
             nodule_type="solid", upper_lobe=False, nodule_count=4, spiculated=False),
        -6.7892,
        0.0011,
    ),
    # 65 F, family history, 12 mm part-solid, upper lobe, single, spiculated:
    # -6.7892 + 0.0861 + 0.6011 + 0.2961 + 3.598890 (-5.3854*(0.912871-1.581139)) + 0.377
    # + 0.6581 + 0.2472 + 0.7729 = -0.151810 -> 0.4621
    (
        dict(age_years=65, female=True, family_history=True, emphysema=False, diameter_mm=12.0,
             nodule_type="part-solid", upper_lobe=True, nodule_count=1, spiculated=True),
        -6.7892 + 0.0287 * 3 + 0.6011 + 0.2961 - 5.3854 * (1.2**-0.5 - 1.58113883) + 0.377 + 0.6581
        - 0.0824 * (1 - 4) + 0.7729,
        0.4621,
    ),
    # 55 M, emphysema, 8 mm ground-glass, lower lobe, 3 nodules:
    # -6.7892 - 0.2009 + 0.2953 + 2.494005 - 0.1276 + 0.0824 = -4.245995 -> 0.0141
    (
        dict(age_years=55, female=False, family_history=False, emphysema=True, diameter_mm=8.0,
             nodule_type="ground-glass", upper_lobe=False, nodule_count=3, spiculated=False),
        -6.7892 + 0.0287 * -7 + 0.2953 - 5.3854 * (0.8**-0.5 - 1.58113883) - 0.1276 - 0.0824 * (3 - 4),
        0.0141,
    ),
    # 70 M, emphysema, 10 mm solid, upper lobe, 2 nodules:
    # -6.7892 + 0.2296 + 0.2953 + 3.129665 + 0.6581 + 0.1648 = -2.311735 -> 0.0902 (just under 10%)
    (
        dict(age_years=70, female=False, family_history=False, emphysema=True, diameter_mm=10.0,
             nodule_type="solid", upper_lobe=True, nodule_count=2, spiculated=False),
        -6.7892 + 0.0287 * 8 + 0.2953 - 5.3854 * (1.0 - 1.58113883) + 0.6581 - 0.0824 * (2 - 4),
        0.0902,
    ),
]


@pytest.mark.parametrize(("inputs", "logit", "expected"), WORKED)
def test_brock_worked_values(inputs: dict, logit: float, expected: float) -> None:
    assert round(expit(logit), 4) == expected  # the hand computation gives the pinned value
    assert brock_probability(**inputs) == pytest.approx(expit(logit), abs=1e-9)
    assert round(brock_probability(**inputs), 4) == expected


def test_brock_size_centre_is_4mm() -> None:
    assert (4 / 10) ** -0.5 == pytest.approx(1.58113883, abs=1e-8)


BASE = dict(age_years=62, female=False, family_history=False, emphysema=False, diameter_mm=8.0,
            nodule_type="solid", upper_lobe=False, nodule_count=1, spiculated=False)


def test_brock_monotonic_in_size() -> None:
    risks = [brock_probability(**{**BASE, "diameter_mm": d}) for d in (2, 4, 6, 8, 10, 15, 20, 30)]
    assert risks == sorted(risks) and len(set(risks)) == len(risks)


@pytest.mark.parametrize(
    "change",
    [
        {"spiculated": True},
        {"female": True},
        {"family_history": True},
        {"emphysema": True},
        {"upper_lobe": True},
        {"nodule_type": "part-solid"},
        {"age_years": 75},
    ],
)
def test_brock_risk_factors_raise_risk(change: dict) -> None:
    assert brock_probability(**{**BASE, **change}) > brock_probability(**BASE)


def test_brock_more_nodules_and_ground_glass_lower_risk() -> None:
    assert brock_probability(**{**BASE, "nodule_count": 6}) < brock_probability(**BASE)
    assert brock_probability(**{**BASE, "nodule_type": "ground-glass"}) < brock_probability(**BASE)


@pytest.mark.parametrize(
    "bad",
    [
        {"age_years": 17},
        {"age_years": 121},
        {"age_years": math.nan},
        {"diameter_mm": 0.5},
        {"diameter_mm": 30.5},
        {"diameter_mm": -3.0},
        {"nodule_count": 0},
        {"nodule_type": "calcified"},
    ],
)
def test_brock_rejects_out_of_range_inputs(bad: dict) -> None:
    with pytest.raises(ValueError):
        brock_probability(**{**BASE, **bad})


# --- BTS 2015 Algorithm 1: solid nodules -----------------------------------------------------------
@pytest.mark.parametrize(
    ("long_axis_mm", "brock", "code"),
    [
        (4.9, None, "no-follow-up"),
        (5.0, None, "ct-12-months"),
        (5.9, None, "ct-12-months"),
        (6.0, None, "ct-3-months"),
        (7.9, None, "ct-3-months"),
        (8.0, 0.05, "ct-3-months"),
        (8.0, 0.099, "ct-3-months"),
        (8.0, 0.10, "pet-ct"),
        (8.0, None, "clinical-review"),
    ],
)
def test_solid_by_diameter(long_axis_mm: float, brock: float | None, code: str) -> None:
    got, sentence = bts_category(nodule(long_axis_mm), brock, patient=ADULT, thresholds=DIAMETER)
    assert got == code
    assert "BTS 2015" in sentence and sentence.endswith(".")


@pytest.mark.parametrize(
    ("volume_mm3", "brock", "code"),
    [
        (79.0, None, "no-follow-up"),
        (80.0, None, "ct-3-months"),
        (299.0, None, "ct-3-months"),
        (300.0, 0.099, "ct-3-months"),
        (300.0, 0.10, "pet-ct"),
        (300.0, None, "clinical-review"),
    ],
)
def test_solid_by_volume(volume_mm3: float, brock: float | None, code: str) -> None:
    # The diameter (7 mm) would say otherwise: the volume decides under the default (BTS prefers volumetry).
    got, _ = bts_category(nodule(7.0, volume_mm3=volume_mm3), brock, patient=ADULT)
    assert got == code


def test_missing_volume_falls_back_to_diameter() -> None:
    assert bts_category(nodule(5.5, volume_mm3=0.0), None, patient=ADULT)[0] == "ct-12-months"


def test_recommendation_quotes_brock_risk() -> None:
    _, sentence = bts_category(nodule(9.0), 0.234, patient=ADULT)
    assert "23.4%" in sentence and "PET-CT" in sentence


# --- BTS 2015 Algorithm 2: subsolid nodules --------------------------------------------------------
@pytest.mark.parametrize("nodule_type", ["ground-glass", "part-solid"])
@pytest.mark.parametrize(
    ("long_axis_mm", "brock", "code"),
    [(4.9, None, "no-follow-up"), (5.0, 0.02, "ct-3-months"), (12.0, 0.40, "ct-3-months")],
)
def test_subsolid(nodule_type: str, long_axis_mm: float, brock: float | None, code: str) -> None:
    got, sentence = bts_category(nodule(long_axis_mm, nodule_type=nodule_type), brock, patient=ADULT)
    assert got == code
    assert "Algorithm 2" in sentence


def test_subsolid_ignores_volume_thresholds() -> None:
    # 6 mm ground-glass nodule of 60 mm3: a solid one would be discharged on volume, a subsolid one is not.
    assert bts_category(nodule(6.0, volume_mm3=60.0, nodule_type="ground-glass"), None, patient=ADULT)[0] == "ct-3-months"


# --- Patient context -------------------------------------------------------------------------------
def test_under_18_is_outside_bts() -> None:
    assert bts_category(nodule(9.0), 0.5, patient=PatientContext(age_years=16))[0] == "clinical-review"


def test_known_malignancy_asks_for_mdt() -> None:
    patient = PatientContext(age_years=60, known_malignancy=True)
    code, sentence = bts_category(nodule(6.5), None, patient=patient, thresholds=DIAMETER)
    assert code == "ct-3-months" and "MDT" in sentence


def test_mass_is_its_own_category() -> None:
    assert bts_category(nodule(30.1), None, patient=ADULT)[0] == "mass"
    assert bts_category(nodule(29.9), 0.2, patient=ADULT)[0] == "pet-ct"


def test_mass_is_strictly_above_3_cm() -> None:
    """BTS 2015 (Callister et al., Thorax 2015;70:ii1-ii54, definitions): a nodule is up to 3 cm,
    a mass is a lesion > 3 cm. Worked values: 30.0 mm is a nodule (Brock, not urgent on size),
    30.1 mm is a mass (urgent, NICE NG12 1.1.1)."""
    patient = PatientContext(age_years=62, sex="M")
    at_30 = assess_lung_study([nodule(30.0)], patient)
    # 30.0 mm is a nodule: Algorithm 1 applies, not the mass rule. Brock for this patient (62 M, one
    # solid lower-lobe nodule): -6.7892 - 5.3854*(3.0**-0.5 - 1.58113883) - 0.0824*(1-4) = -1.1362
    # -> 24.3% -> PET-CT.
    assert at_30.recommendation_code == "pet-ct"
    assert round(at_30.nodules[0].brock_probability, 3) == 0.243
    assert not any("mass" in r for r in at_30.urgent_reasons)
    above = assess_lung_study([nodule(30.1)], patient)
    assert above.recommendation_code == "mass" and above.urgent
    assert any("30.1 mm > 30 mm" in r and "NG12" in r for r in above.urgent_reasons)
    # The comparison is on the size as reported (0.1 mm): what the report calls 30.0 mm is no mass.
    assert assess_lung_study([nodule(30.04)], patient).recommendation_code != "mass"


# --- Whole study: aggregation and urgency ----------------------------------------------------------
def test_no_detection_is_no_all_clear() -> None:
    """Hazard H-11: zero detections may be a miss. The category says so, and the AI recommends
    no follow-up of its own: "no follow-up" is only the radiologist's to give."""
    result = assess_lung_study([], ADULT)
    assert result.recommendation_code == NO_NODULE_DETECTED == "no-nodule-detected" and result.nodules == ()
    assert not result.urgent
    text = result.recommendation.lower()
    assert "no pulmonary nodule detected by the ai" in text and "not an all-clear" in text
    assert "no follow-up" not in text and "ct at" not in text and "bts" not in text
    assert NO_NODULE_DETECTED not in CATEGORY_ORDER[1:]  # below every category a nodule can get


def test_no_detection_report_content_and_code() -> None:
    from pathways import codes
    from pathways.lung_cancer_report import lung_report_content

    content = lung_report_content(assess_lung_study([], ADULT))
    assert content.conclusion_codes == (codes.NO_NODULE_DETECTED_BY_AI,)
    assert content.conclusion_codes[0].system == codes.RADPATH and content.conclusion_codes[0].code == "ai-no-nodule-detected"
    assert len(codes.NO_NODULE_DETECTED_BY_AI.display) <= 64  # a DICOM Code Meaning (LO)
    assert not any(c.code.startswith("bts2015-") for c in content.conclusion_codes)
    assert "No pulmonary nodule was detected by the AI" in content.text and "not an all-clear" in content.text
    assert "Recommendation:" not in content.text and "no follow-up" not in content.text.lower()
    assert "AI result: No pulmonary nodule detected by the AI." in content.text
    assert not content.urgent and content.findings == ()


def test_study_takes_most_intensive_category() -> None:
    nodules = [nodule(7.0, index=1), nodule(4.0, index=2), nodule(5.5, index=3, volume_mm3=150.0)]
    result = assess_lung_study(nodules, ADULT, DIAMETER)
    assert [a.bts_category for a in result.nodules] == ["ct-3-months", "no-follow-up", "ct-12-months"]
    assert result.recommendation_code == "ct-3-months"
    assert result.recommendation.startswith("Nodule 1:")
    assert not result.urgent


def test_study_uses_nodule_count_and_long_axis_for_brock() -> None:
    patient = PatientContext(age_years=70, sex="M", emphysema=True)
    lead = nodule(10.0, lobe="LUL", index=1)
    alone = assess_lung_study([lead], patient).nodules[0].brock_probability
    with_one_more = assess_lung_study([lead, nodule(4.0, index=2)], patient).nodules[0].brock_probability
    expected_two = brock_probability(age_years=70, female=False, family_history=False, emphysema=True,
                                     diameter_mm=10.0, nodule_type="solid", upper_lobe=True,
                                     nodule_count=2, spiculated=False)
    assert round(with_one_more, 4) == 0.0902 == round(expected_two, 4)  # the fourth worked value
    assert alone > with_one_more  # more nodules, lower per-nodule risk (coefficient -0.0824)


def test_high_brock_nodule_is_urgent_and_drives_pet_ct() -> None:
    patient = PatientContext(age_years=68, sex="F", family_history_lung_cancer=True)
    nodules = [nodule(14.0, lobe="RUL", spiculated=True, index=1), nodule(6.0, index=2)]
    result = assess_lung_study(nodules, patient)
    assert result.nodules[0].brock_probability >= 0.10
    assert result.recommendation_code == "pet-ct"
    assert result.urgent
    assert len(result.urgent_reasons) == 1 and "nodule 1" in result.urgent_reasons[0]
    assert "Brock" in result.urgent_reasons[0]


def test_urgent_reason_names_the_algorithm_of_the_nodule_type() -> None:
    """BTS 2015 (Callister et al., Thorax 2015;70:ii1-ii54): Algorithm 1 manages solid nodules,
    Algorithm 2 subsolid ones. Same patient and 12 mm upper-lobe spiculated nodule (the second
    worked Brock value): part-solid 46.2% is on Algorithm 2's 3-month CT, solid 37.1%
    (the same logit less the part-solid 0.377 term: -0.528810) meets Algorithm 1's PET-CT threshold."""
    patient = PatientContext(age_years=65, sex="F", family_history_lung_cancer=True)

    part_solid = assess_lung_study([nodule(12.0, nodule_type="part-solid", lobe="RUL", spiculated=True)], patient)
    assert round(part_solid.nodules[0].brock_probability, 4) == 0.4621
    assert part_solid.recommendation_code == "ct-3-months" and part_solid.urgent
    (reason,) = part_solid.urgent_reasons
    assert "Algorithm 2" in reason and "Algorithm 1" not in reason and "PET-CT" not in reason
    assert "3-month CT" in reason

    solid = assess_lung_study([nodule(12.0, lobe="RUL", spiculated=True)], patient)
    assert round(solid.nodules[0].brock_probability, 4) == 0.3708
    assert solid.recommendation_code == "pet-ct" and solid.urgent
    (reason,) = solid.urgent_reasons
    assert "Algorithm 1 PET-CT threshold" in reason and "Algorithm 2" not in reason


def test_ground_glass_urgent_reason_is_algorithm_2() -> None:
    patient = PatientContext(age_years=80, sex="F", family_history_lung_cancer=True, emphysema=True)
    result = assess_lung_study([nodule(25.0, nodule_type="ground-glass", lobe="LUL", spiculated=True)], patient)
    assert result.nodules[0].brock_probability >= 0.10
    assert all("Algorithm 2" in r and "Algorithm 1" not in r for r in result.urgent_reasons) and result.urgent


def test_brock_just_below_threshold_is_not_urgent() -> None:
    patient = PatientContext(age_years=70, sex="M", emphysema=True)
    result = assess_lung_study([nodule(10.0, lobe="LUL", index=1), nodule(4.0, index=2)], patient)
    assert result.nodules[0].brock_probability == pytest.approx(0.0902, abs=5e-5)
    assert result.recommendation_code == "ct-3-months" and not result.urgent


def test_mass_is_urgent_with_nice_reason() -> None:
    result = assess_lung_study([nodule(6.0, index=1), nodule(32.0, index=2)], ADULT)
    assert result.recommendation_code == "mass"
    assert result.urgent and any("NG12" in r and "nodule 2" in r for r in result.urgent_reasons)
    assert result.nodules[1].brock_probability is None  # beyond the model's 30 mm range


def test_unknown_age_gives_no_brock_and_clinical_review() -> None:
    result = assess_lung_study([nodule(9.0)], PatientContext(sex="F"))
    assert result.nodules[0].brock_probability is None
    assert result.recommendation_code == "clinical-review" and not result.urgent


def test_unknown_sex_uses_higher_risk() -> None:
    n = [nodule(9.0)]
    unknown = assess_lung_study(n, PatientContext(age_years=60, sex="U")).nodules[0].brock_probability
    female = assess_lung_study(n, PatientContext(age_years=60, sex="F")).nodules[0].brock_probability
    male = assess_lung_study(n, PatientContext(age_years=60, sex="M")).nodules[0].brock_probability
    assert unknown == female > male


def test_categories_are_ordered_least_to_most_intensive() -> None:
    assert CATEGORY_ORDER.index("no-follow-up") < CATEGORY_ORDER.index("ct-12-months")
    assert CATEGORY_ORDER.index("ct-3-months") < CATEGORY_ORDER.index("pet-ct") < CATEGORY_ORDER.index("mass")


# --- Thresholds model ------------------------------------------------------------------------------
def test_thresholds_defaults_are_bts_values() -> None:
    t = LungThresholds()
    assert (t.solid_no_follow_up_below_mm, t.solid_no_follow_up_below_mm3) == (5.0, 80.0)
    assert (t.solid_ct_12_months_below_mm, t.solid_brock_from_mm, t.solid_brock_from_mm3) == (6.0, 8.0, 300.0)
    assert (t.pet_ct_brock_probability, t.subsolid_follow_up_from_mm, t.mass_above_mm) == (0.10, 5.0, 30.0)
    assert all(f.description for f in LungThresholds.model_fields.values())


def test_thresholds_forbid_unknown_keys_and_disorder() -> None:
    with pytest.raises(ValidationError):
        LungThresholds.model_validate({"pet_ct_brock": 0.2})  # typo
    with pytest.raises(ValidationError):
        LungThresholds(solid_brock_from_mm=4.0)
    with pytest.raises(ValidationError):
        LungThresholds(solid_no_follow_up_below_mm3=400.0)


def test_designer_can_move_the_pet_threshold() -> None:
    patient = PatientContext(age_years=70, sex="M", emphysema=True)
    nodules = [nodule(10.0, lobe="LUL", index=1), nodule(4.0, index=2)]  # Brock 9.02%
    result = assess_lung_study(nodules, patient, LungThresholds(pet_ct_brock_probability=0.05))
    assert result.recommendation_code == "pet-ct" and result.urgent
