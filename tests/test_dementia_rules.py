"""Dementia MRI rules: hippocampal percentile for age, atrophy and asymmetry flags, report content."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError
from pydicom.sr.codedict import codes as dicom_codes

from pathways import codes
from pathways.dementia_mri import (
    BrainVolumes,
    DementiaThresholds,
    HippocampalNorm,
    assess_brain_study,
    asymmetry_index_percent,
    compare_to_truth,
    hippocampal_percentile,
    hippocampal_z_score,
)
from pathways.dementia_report import dementia_report_content
from pathways.findings import PatientContext

NORM = HippocampalNorm()


def test_percentile_at_the_reference_age_is_the_published_distribution():
    # PMC3773349: left 3.26 cm3 (SD 0.34), right 3.43 (SD 0.32); normal model.
    assert hippocampal_percentile(3.26, "left", 63.5, NORM) == pytest.approx(50.0)
    assert hippocampal_percentile(3.43, "right", 63.5, NORM) == pytest.approx(50.0)
    # mean - 1.959964 SD is the 2.5th percentile: 3.26 - 1.959964 * 0.34 = 2.593612
    assert hippocampal_percentile(2.593612, "left", 63.5, NORM) == pytest.approx(2.5, abs=1e-3)
    # mean - 1 SD: 15.87th percentile (right: 3.43 - 0.32 = 3.11)
    assert hippocampal_percentile(3.11, "right", 63.5, NORM) == pytest.approx(15.866, abs=1e-3)


def test_age_scaling_follows_the_annual_atrophy_rate():
    # Fraser 2015: -0.85 %/year. Ten years on: factor 0.9915 ** 10 = 0.918179
    factor = 0.9915**10
    assert factor == pytest.approx(0.918179, abs=1e-6)
    mean, sd = NORM.at_age("left", 73.5)
    assert (mean, sd) == (pytest.approx(3.26 * 0.918179, abs=1e-5), pytest.approx(0.34 * 0.918179, abs=1e-5))
    assert hippocampal_percentile(2.99326, "left", 73.5, NORM) == pytest.approx(50.0, abs=0.01)
    # The same 2.9 cm3 is lower at 63.5 years than at 83.5 years
    assert hippocampal_z_score(2.9, "left", 63.5, NORM) == pytest.approx((2.9 - 3.26) / 0.34)
    assert hippocampal_percentile(2.9, "left", 83.5, NORM) > hippocampal_percentile(2.9, "left", 63.5, NORM)


def test_asymmetry_index_worked_values():
    # |L - R| / (L + R) x 100
    assert asymmetry_index_percent(3.0, 3.5) == pytest.approx(100 * 0.5 / 6.5)  # 7.69 %
    assert asymmetry_index_percent(2.8, 3.5) == pytest.approx(100 * 0.7 / 6.3)  # 11.11 %
    assert asymmetry_index_percent(0.0, 0.0) == 0.0


def _volumes(left: float, right: float) -> BrainVolumes:
    return BrainVolumes(intracranial_ml=1400.0, brain_ml=1050.0, hippocampus_left_ml=left, hippocampus_right_ml=right)


def test_atrophy_below_the_2_5th_percentile_is_flagged_per_side():
    patient = PatientContext(age_years=70, sex="F")
    a = assess_brain_study(_volumes(2.30, 3.30), patient)
    left, right = a.hippocampi
    mean70 = 3.26 * 0.9915**6.5
    assert left.z_score == pytest.approx((2.30 - mean70) / (0.34 * 0.9915**6.5), abs=1e-3)
    assert left.atrophy and not right.atrophy and a.atrophy
    assert a.recommendation_code == "hippocampal-atrophy" and "(left)" in a.recommendation
    assert a.asymmetric and a.smaller_side == "left"  # 1.0 / 5.6 = 17.9 % > 9.8 %
    assert a.brain_parenchymal_fraction == pytest.approx(0.75)
    assert not a.urgent


def test_normal_volumes_and_the_threshold_is_the_spec_value():
    patient = PatientContext(age_years=63, sex="M")
    a = assess_brain_study(_volumes(3.2, 3.4), patient)
    assert a.recommendation_code == "no-atrophy" and not a.asymmetric
    # A 2.7 cm3 left hippocampus at 63 years: z = (2.7 - 3.2739) / 0.34145 = -1.681, the 4.6th percentile
    v = _volumes(2.7, 3.4)
    age = PatientContext(age_years=63, sex="M")
    assert not assess_brain_study(v, age).atrophy
    assert assess_brain_study(v, age, DementiaThresholds(atrophy_below_percentile=6.0)).atrophy


def test_norms_are_not_applied_without_age_or_outside_their_range():
    for patient in (PatientContext(age_years=None), PatientContext(age_years=35, sex="F")):
        a = assess_brain_study(_volumes(2.0, 2.0), patient)
        assert a.recommendation_code == "norms-not-applicable"
        assert all(h.percentile is None and not h.atrophy for h in a.hippocampi)


def test_thresholds_reject_unknown_keys():
    with pytest.raises(ValidationError):
        DementiaThresholds.model_validate({"atrophy_below_percentil": 5})


def test_report_content_codes_and_segments():
    a = assess_brain_study(_volumes(2.30, 3.30), PatientContext(age_years=70, sex="F"))
    content = dementia_report_content(a)
    by_key = {f.key: f for f in content.findings}
    assert by_key["hippocampus-left"].segment_number == 1 and by_key["hippocampus-right"].segment_number == 2
    assert by_key["brain"].segment_number is None and by_key["intracranial"].segment_number is None
    left = by_key["hippocampus-left"]
    assert [m.concept for m in left.measurements] == [codes.VOLUME, codes.PERCENTILE_RANKING, codes.Z_SCORE_OF_MEASUREMENT]
    assert left.measurements[0].value == 2.3 and left.measurements[0].unit == codes.CM3
    assert content.conclusion_codes[0].code == "dementia-mri-hippocampal-atrophy"
    assert "URGENT" not in content.text and "hippocampal atrophy" in content.text


def test_dementia_codes_agree_with_pydicom_codedict():
    pairs = [
        (codes.HIPPOCAMPUS, dicom_codes.SCT.Hippocampus), (codes.BRAIN, dicom_codes.SCT.Brain),
        (codes.INTRACRANIAL_STRUCTURE, dicom_codes.SCT.IntracranialStructure),
        (codes.LATERALITY, dicom_codes.SCT.Laterality), (codes.LEFT, dicom_codes.SCT.Left),
        (codes.RIGHT, dicom_codes.SCT.Right), (codes.PERCENTILE_RANKING, dicom_codes.DCM.PercentileRankingOfMeasurement),
        (codes.Z_SCORE_OF_MEASUREMENT, dicom_codes.DCM.ZScoreOfMeasurement), (codes.MRI_REPORT, dicom_codes.LN.MRIReport),
        (codes.CM3, dicom_codes.UCUM.CubicCentimeter), (codes.NO_UNITS, dicom_codes.UCUM.NoUnits),
    ]
    for ours, theirs in pairs:
        assert (ours.code, codes.dicom_scheme(ours.system)) == (theirs.value, theirs.scheme_designator)


def test_compare_to_truth_line():
    a = assess_brain_study(_volumes(2.30, 3.30), PatientContext(age_years=70, sex="F"))
    truth = {"intracranial_volume_ml": 1400.0, "brain_volume_ml": 1000.0,
             "hippocampus_left_ml": 2.30, "hippocampus_right_ml": 3.00}
    line = compare_to_truth(a.model_dump(mode="json"), truth)
    assert line.startswith("ICV 1400/1400 ml (+0.0%); brain 1050/1000 ml (+5.0%)")
    assert "HC-R 3.30/3.00 ml (+10.0%)" in line and line.endswith("-> hippocampal-atrophy")
    assert not math.isnan(a.asymmetry_percent)
