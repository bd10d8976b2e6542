"""Nodule growth against the prior chest CT: volume-doubling time, matching after alignment and
the BTS 2015 growth rules, with worked values (pathways/lung_growth.py)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from pathways.findings import LungAssessment, Nodule, NoduleAssessment
from pathways.lung_cancer_ct import compare_to_prior
from pathways.lung_growth import GrowthThresholds, assess_growth, growth_action, match_nodules, volume_doubling_time_days


def _nodule(index: int, xyz, volume: float, kind: str = "solid") -> Nodule:
    d = 2 * (3 * volume / (4 * math.pi)) ** (1 / 3)
    return Nodule(index=index, centre_zyx_vox=(0, 0, 0), centre_xyz_mm=xyz, long_axis_mm=round(d, 1),
                  short_axis_mm=round(d, 1), mean_diameter_mm=round(d, 1), volume_mm3=volume, nodule_type=kind,
                  spiculated=False, lobe="RUL", mean_hu=0.0, confidence=0.9)


def test_volume_doubling_time_worked_values():
    # VDT = dt ln2 / ln(V2/V1): a doubling in 91 days is a VDT of 91 days.
    assert volume_doubling_time_days(200, 400, 91) == pytest.approx(91.0)
    # +25 % (BTS 2015's threshold of significant growth) over a year: 365 ln2 / ln 1.25 = 1133.8 days.
    assert volume_doubling_time_days(200, 250, 365) == pytest.approx(1133.79, abs=0.01)
    # 220 -> 354.78 mm3 in 91 days (the synthetic follow-up of seed 17): 132.4 days.
    assert volume_doubling_time_days(220.32, 354.78, 91) == pytest.approx(132.4, abs=0.1)
    assert volume_doubling_time_days(400, 200, 91) == pytest.approx(-91.0)  # halving
    assert volume_doubling_time_days(300, 300, 91) is None
    with pytest.raises(ValueError):
        volume_doubling_time_days(0, 300, 91)


def test_nodules_match_after_the_patient_moved_and_new_and_resolved_ones_are_named():
    prior = [_nodule(1, (50.0, 10.0, 100.0), 200), _nodule(2, (-60.0, 0.0, 80.0), 100)]
    shift = (12.0, -8.0, 20.0)  # the patient lies elsewhere in the scanner this time
    current = [_nodule(1, (-48.0, -8.0, 140.0), 40), _nodule(2, (62.5, 2.0, 120.5), 400)]
    pairs = match_nodules(prior, current, shift, 10.0)
    assert [(p.index if p else None, c.index if c else None) for p, c in pairs] == [(1, 2), (None, 1), (2, None)]
    growth = {(g.prior_index, g.index): g for g in assess_growth(prior, current, 91, shift)}
    grown = growth[(1, 2)]
    assert grown.status == "growing" and grown.volume_change == 1.0 and grown.vdt_days == pytest.approx(91.0)
    assert growth[(None, 1)].status == "new" and growth[(2, None)].status == "resolved"


@pytest.mark.parametrize(("v2", "status"), [(249.0, "stable"), (250.0, "growing"), (151.0, "stable"), (150.0, "shrinking")])
def test_a_quarter_change_in_volume_is_significant(v2, status):
    """BTS 2015: a change in volume of 25 % or more is significant growth (or shrinkage)."""
    (g,) = assess_growth([_nodule(1, (0, 0, 0), 200)], [_nodule(1, (0, 0, 0), v2)], 91, (0, 0, 0))
    assert g.status == status and (g.vdt_days is None) == (status == "stable")


def test_the_vdt_ranges_decide_the_action():
    t = GrowthThresholds()

    def action(vdt: float, kind: str = "solid"):
        (g,) = assess_growth([_nodule(1, (0, 0, 0), 100)], [_nodule(1, (0, 0, 0), 100 * 2 ** (365 / vdt))], 365, (0, 0, 0))
        assert g.vdt_days == pytest.approx(vdt, abs=0.1)
        return growth_action(g, kind, t)

    text, urgent = action(300)
    assert urgent and "biopsy, resection or non-surgical treatment" in text and "Algorithm 1" in text
    text, urgent = action(500)
    assert not urgent and "patient preference" in text
    text, urgent = action(800)
    assert not urgent and "range of benign nodules" in text
    text, urgent = action(300, "ground-glass")
    assert urgent and "Algorithm 2" in text and "resection or biopsy" in text


def _assessment(nodules, code: str, date: dt.date, centroid) -> LungAssessment:
    return LungAssessment(nodules=tuple(NoduleAssessment(nodule=n, brock_probability=0.02, bts_category=code,
                                                         recommendation="CT at 3 months.") for n in nodules),
                          recommendation_code=code, recommendation="Nodule 1: CT at 3 months.", urgent=False,
                          study_date=date, lung_centroid_xyz_mm=centroid)


def test_growth_raises_the_category_and_flags_a_cancer_range_vdt_but_never_lowers_it():
    prior = _assessment([_nodule(1, (50.0, 10.0, 100.0), 200)], "ct-3-months", dt.date(2026, 1, 5), (0.0, 0.0, 0.0))
    grown = _assessment([_nodule(1, (53.0, 12.0, 101.0), 420)], "ct-3-months", dt.date(2026, 4, 6), (3.0, 2.0, 1.0))
    compared = compare_to_prior(grown, prior, "S-prior")
    assert compared.interval_days == 91 and compared.prior_study_key == "S-prior"
    assert compared.recommendation_code == "clinical-review" and compared.urgent
    assert "VDT 85 days <= 400" in compared.urgent_reasons[0]
    stable = _assessment([_nodule(1, (53.0, 12.0, 101.0), 210)], "ct-3-months", dt.date(2026, 4, 6), (3.0, 2.0, 1.0))
    compared = compare_to_prior(stable, prior, "S-prior")
    assert compared.recommendation_code == "ct-3-months" and not compared.urgent
    assert "no nodule grew significantly" in compared.recommendation
    mass = _assessment([_nodule(1, (53.0, 12.0, 101.0), 20000)], "mass", dt.date(2026, 4, 6), (3.0, 2.0, 1.0))
    assert compare_to_prior(mass, prior, "S-prior").recommendation_code == "mass"  # never lowered
    undated = grown.model_copy(update={"study_date": None})
    assert compare_to_prior(undated, prior, "S-prior") == undated  # no date, no comparison claimed


def test_a_followed_up_nodule_no_longer_found_goes_to_review_not_discharge():
    """BTS 2015 discharges a resolved nodule, but the AI not finding it may be a miss: the category
    rises to clinical review so a radiologist confirms before surveillance ends (hazard H-30).
    A prior nodule that needed no follow-up changes nothing when it is not found again."""
    prior = _assessment([_nodule(1, (50.0, 10.0, 100.0), 200), _nodule(2, (-60.0, 20.0, 90.0), 30)], "ct-3-months",
                        dt.date(2026, 1, 5), (0.0, 0.0, 0.0))
    prior = prior.model_copy(update={"nodules": (prior.nodules[0],
                                                 prior.nodules[1].model_copy(update={"bts_category": "no-follow-up"}))})
    only_small = _assessment([_nodule(1, (-57.0, 22.0, 91.0), 31)], "no-follow-up", dt.date(2026, 4, 6), (3.0, 2.0, 1.0))
    compared = compare_to_prior(only_small, prior, "S-prior")
    assert [g.status for g in compared.growth if g.status == "resolved"] == ["resolved"]
    assert compared.recommendation_code == "clinical-review" and not compared.urgent
    assert "prior nodule 1 (ct-3-months) not found" in compared.recommendation
    only_big = _assessment([_nodule(1, (53.0, 12.0, 101.0), 205)], "ct-3-months", dt.date(2026, 4, 6), (3.0, 2.0, 1.0))
    assert compare_to_prior(only_big, prior, "S-prior").recommendation_code == "ct-3-months"


def test_a_matched_nodule_keeps_its_prior_tracking_uid_and_a_new_one_gets_none():
    prior = _assessment([_nodule(1, (50.0, 10.0, 100.0), 200)], "ct-3-months", dt.date(2026, 1, 5), (0.0, 0.0, 0.0))
    current = _assessment([_nodule(1, (-40.0, 30.0, 80.0), 90), _nodule(2, (53.0, 12.0, 101.0), 210)], "ct-3-months",
                          dt.date(2026, 4, 6), (3.0, 2.0, 1.0))
    compared = compare_to_prior(current, prior, "S-prior", prior_result_id="r-1", prior_tracking={1: "2.25.1"})
    assert [a.tracking_uid for a in compared.nodules] == [None, "2.25.1"] and compared.prior_result_id == "r-1"
