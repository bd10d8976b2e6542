"""Reading the radiologist's report and the concordance arithmetic (issue 16): pure functions,
worked values; the extraction measured on simulated radiologists' reports it was not written
against (seeds 90000-90399)."""

from __future__ import annotations

import numpy as np
import pytest

from pathways.concordance import StudyConcordance, by_model_version, concordance_table, lung_concordance, wilson_interval
from pathways.final_reports import LungReading, read_lung_report
from radpath.synth.radiologist import write_chest_ct_report


@pytest.mark.parametrize("text, present, sizes", [
    ("No pulmonary nodules.", False, ()),
    ("The lungs are clear.", False, ()),
    ("No evidence of pulmonary nodule or mass.", False, ()),
    ("Previously seen nodule in the RLL has resolved.", False, ()),
    ("Multiple tiny nodules are not seen on this study.", False, ()),
    ("There is a 7 mm solid nodule in the right upper lobe. No other nodules.", True, (7.0,)),
    ("A 1.2 cm spiculated mass in the left upper lobe.", True, (12.0,)),
    ("Probable 4 mm nodule in the right middle lobe.", True, (4.0,)),  # hedged: still reported
    ("Lungs: 6 x 5 mm nodule RLL, unchanged.\n3 mm nodule LUL.", True, (6.0, 3.0)),  # long axis of "6 x 5"
    ("Nodule in the left lower lobe as before.", True, ()),  # affirmed, no size stated
])
def test_a_report_is_read_sentence_by_sentence_with_negation(text, present, sizes):
    reading = read_lung_report(text)
    assert reading.mentions_nodules and reading.nodule_present is present and reading.sizes_mm == sizes


def test_a_report_silent_about_nodules_is_not_comparable():
    reading = read_lung_report("Heart size is normal. The ascending aorta measures 34 mm.")
    assert not reading.mentions_nodules and reading.sizes_mm == ()
    assert lung_concordance({"nodules": []}, reading, pathway="p", model_version="1", trust="t").outcome == "not comparable"


def test_the_reader_recovers_what_simulated_radiologists_wrote():
    """400 reports from held-out seeds, a tenth of them disagreeing with the image: the reader must
    recover what the report says (present or not, and the largest size), not the image truth."""
    present_right = size_right = sized = 0
    for seed in range(90000, 90400):
        rng = np.random.default_rng(seed)
        nodules = [{"diameter_mm": float(rng.uniform(2, 25)), "nodule_type": str(rng.choice(["solid", "ground-glass"])),
                    "lobe": str(rng.choice(["RUL", "RML", "RLL", "LUL", "LLL"]))} for _ in range(rng.integers(0, 4))]
        written = write_chest_ct_report(nodules, rng, disagreement=0.1)
        reading = read_lung_report(written.text)
        present_right += reading.nodule_present == written.nodule_present
        if written.largest_mm is not None:
            sized += 1
            size_right += reading.largest_mm == pytest.approx(written.largest_mm)
    print(f"reader on 400 held-out reports: presence {present_right}/400, largest size {size_right}/{sized}")
    assert present_right == 400 and size_right == sized


def test_study_outcomes_against_the_report():
    def ai(*sizes):  # noqa: ANN002, ANN202
        return {"nodules": [{"nodule": {"long_axis_mm": s}} for s in sizes]}

    def outcome(assessment, text):  # noqa: ANN001, ANN202
        return lung_concordance(assessment, read_lung_report(text), pathway="lung", model_version="1.1.0", trust="RXX01")

    tp = outcome(ai(7.2, 3.0), "There is a 9 mm solid nodule in the right upper lobe.")
    assert tp.outcome == "TP" and tp.size_difference_mm == pytest.approx(-1.8)
    assert outcome(ai(), "A 6 mm nodule in the left lower lobe.").outcome == "FN"
    assert outcome(ai(8.0), "No pulmonary nodules.").outcome == "FP"
    # Below 5 mm neither side is actionable (BTS 2015: no follow-up), whatever each says.
    assert outcome(ai(4.0), "The lungs are clear.").outcome == "TN"
    assert outcome(ai(), "Probable 4 mm nodule in the right middle lobe.").outcome == "TN"
    # A nodule affirmed without a size counts as positive.
    assert outcome(ai(6.0), "Nodule in the left lower lobe as before.").outcome == "TP"


def test_wilson_interval_worked_values():
    # 45/50: p 0.90; z 1.96 gives centre 0.8715 and half-width 0.0851 (Wilson 1927).
    low, high = wilson_interval(45, 50)
    assert (low, high) == (pytest.approx(0.7864, abs=1e-4), pytest.approx(0.9565, abs=1e-4))
    low, high = wilson_interval(0, 10)  # never 0-0, unlike the Wald interval
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_figures_per_model_version_and_trust():
    def s(version, outcome, ai=None, rep=None, trust="RXX01"):  # noqa: ANN001, ANN202
        return StudyConcordance("lung-cancer-ct", version, trust, outcome, ai, rep)

    studies = ([s("1.1.0", "TP", 7.0, 8.0)] * 45 + [s("1.1.0", "FN")] * 5 + [s("1.1.0", "TN")] * 40
               + [s("1.1.0", "FP", 6.0, None)] * 10 + [s("1.1.0", "TP", 12.0, 9.0)] + [s("1.0.0", "not comparable")])
    rows = {r.model_version: r for r in by_model_version(studies)}
    v = rows["1.1.0"]
    assert (v.tp, v.fp, v.fn, v.tn, v.size_pairs, v.size_within_tolerance) == (46, 10, 5, 40, 46, 45)
    assert v.sensitivity == pytest.approx(46 / 51) and v.specificity == pytest.approx(0.8)
    assert rows["1.0.0"].not_comparable == 1 and rows["1.0.0"].sensitivity is None
    table = concordance_table(by_model_version(studies))
    # 40/50: Wilson centre 0.7786, half-width 0.1090
    assert table[1]["specificity (95% CI)"] == "80% (67%-89%)" and table[1]["size within 2 mm"] == "45/46"
    assert table[0]["sensitivity (95% CI)"] == "n/a"
    assert LungReading(mentions_nodules=True, nodule_present=True, sizes_mm=(9.0, 4.0)).largest_mm == 9.0


@pytest.mark.parametrize("text, days", [
    ("Recommend follow-up CT in 3 months.", 91),  # 3 x 365.25/12: the lung spec's CT at 3 months
    ("Repeat CT at 12 months (BTS).", 365),
    ("A 3-month CT is advised.", 91),
    ("CT in one year.", 365),
    ("Follow-up CT chest in 6 weeks and CT at 12 months.", 42),  # the shortest asked for
    ("No follow-up required.", None),
    ("No further imaging is needed; CT in 3 months is not required.", None),
    ("Compared with CT 3 months ago, unchanged.", None),  # a prior, not a request
])
def test_the_follow_up_a_report_asks_for(text, days):
    from pathways.final_reports import follow_up_days

    assert follow_up_days(text) == days


def test_low_agreement_needs_the_upper_bound_below_the_minimum_and_enough_cases():
    from pathways.concordance import VersionConcordance, low_agreement

    def row(tp, fn, tn=0, fp=0):  # noqa: ANN001, ANN202
        return VersionConcordance("lung-cancer-ct", "1.1.0", "RXX01", tp, fp, fn, tn, 0, 0, 0)

    # 20/30: one-sided 95 % Wilson upper bound (z 1.645) 0.789 < 0.80 -> alert; 22/30: 0.843 -> none.
    (low,) = low_agreement([row(20, 10)], min_cases=30, min_sensitivity=0.80, min_specificity=None)
    assert (low.measure, low.cases) == ("sensitivity", 30) and low.upper_bound == pytest.approx(0.789, abs=1e-3)
    assert low_agreement([row(22, 8)], min_cases=30, min_sensitivity=0.80, min_specificity=None) == []
    assert low_agreement([row(0, 29)], min_cases=30, min_sensitivity=0.80, min_specificity=None) == []  # too few
    (spec,) = low_agreement([row(30, 0, tn=10, fp=20)], min_cases=30, min_sensitivity=0.80, min_specificity=0.60)
    assert spec.measure == "specificity" and spec.value == pytest.approx(1 / 3)
