"""Heart failure rules with worked values: LV volumes (Lang 2015), EF categories (ESC 2021),
Agatston scoring (Agatston 1990) and CAC-DRS (Hecht 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from pathways.coronary_candidates import EXCLUSION_WORDS
from pathways.heart_failure import (
    CalciumRules,
    EchoRules,
    agatston_weight,
    assess_calcium,
    assess_echo,
    cac_drs,
    classify_lvef,
    compare_to_truth,
    ejection_fraction_percent,
    lv_volume_area_length,
    lv_volume_method_of_discs,
    score_calcium,
    slice_scores,
)
from pathways.heart_failure_report import calcium_report_content


# --- LVEF categories: ESC 2021 Table 3 (HFrEF <= 40, HFmrEF 41-49, HFpEF >= 50) ---------------
@pytest.mark.parametrize(
    ("ef", "category"),
    [(15.0, "reduced"), (40.0, "reduced"), (40.4, "reduced"), (40.5, "mildly-reduced"), (41.0, "mildly-reduced"),
     (49.0, "mildly-reduced"), (49.49, "mildly-reduced"), (49.5, "preserved"), (50.0, "preserved"), (72.0, "preserved")],
)
def test_ef_category_boundaries(ef, category):
    assert classify_lvef(ef) == category


def test_ef_formula_worked_value():
    # (EDV - ESV) / EDV: 120 ml and 72 ml → 40 % (HFrEF boundary, inclusive)
    assert ejection_fraction_percent(120.0, 72.0) == pytest.approx(40.0)
    assert classify_lvef(ejection_fraction_percent(120.0, 72.0)) == "reduced"
    assert classify_lvef(ejection_fraction_percent(100.0, 59.0)) == "mildly-reduced"  # 41 %
    assert classify_lvef(ejection_fraction_percent(100.0, 50.0)) == "preserved"  # 50 %
    with pytest.raises(ValueError):
        ejection_fraction_percent(0.0, 0.0)


# --- Volumes: Lang 2015 single-plane method of discs and area-length ---------------------------
def _rectangle(width_px: int, length_px: int) -> np.ndarray:
    mask = np.zeros((length_px + 20, 100), bool)
    mask[10 : 10 + length_px, 10 : 10 + width_px] = True
    return mask


def test_method_of_discs_of_a_rectangle_is_a_cylinder():
    # 4 cm wide, 8 cm long at 0.05 cm/px: discs of diameter 4 cm → V = pi/4 * 4^2 * 8 = 100.53 ml
    volume, length = lv_volume_method_of_discs(_rectangle(80, 160), 0.05, 20)
    assert length == pytest.approx(8.0, abs=0.01)
    assert volume == pytest.approx(np.pi / 4 * 16 * 8, rel=0.005)


def test_method_of_discs_of_a_half_ellipse_is_a_half_spheroid():
    # Half ellipse r = 2.5 cm, L = 8 cm: V = 2/3 * pi * r^2 * L = 104.72 ml (within 1 %)
    rows, cols = np.mgrid[0:200, 0:120]
    u, w = (cols - 60) / 50.0, (180 - rows) / 160.0
    mask = (u**2 + w**2 <= 1) & (w >= 0)
    volume, _ = lv_volume_method_of_discs(mask, 0.05, 20)
    assert volume == pytest.approx(2 / 3 * np.pi * 2.5**2 * 8, rel=0.01)


def test_area_length_worked_value():
    # V = 0.85 * A^2 / L: rectangle 4 x 8 cm → A = 32 cm2, L = 8 cm → 108.8 ml
    volume, length = lv_volume_area_length(_rectangle(80, 160), 0.05)
    assert length == pytest.approx(8.0, abs=0.01)
    assert volume == pytest.approx(0.85 * 32**2 / 8, rel=0.005)


def test_echo_assessment_picks_largest_and_smallest_frames():
    # Cylinders 8 cm long narrowing from 4 cm to 3 cm diameter, then widening: ED frame 0, ES frame 5
    widths = (80, 76, 72, 68, 64, 60, 60, 62, 64, 66, 68, 70)
    masks = np.stack([_rectangle(w, 160) for w in widths])
    a = assess_echo(masks, 0.05)
    assert (a.ed_frame, a.es_frame) == (0, 5)
    assert a.ef_percent == pytest.approx((1 - (3 / 4) ** 2) * 100, abs=0.5)  # 43.75 %
    assert a.ef_category == "mildly-reduced"


def test_echo_with_an_unstable_segmentation_is_not_measurable():
    # Volumes jumping between 4 cm and 2 cm cylinders every frame: 75 % change per frame
    masks = np.stack([_rectangle(80 if k % 2 else 40, 160) for k in range(12)])
    a = assess_echo(masks, 0.05)
    assert not a.measurable and "unstable" in a.reason
    assert assess_echo(masks, 0.05, EchoRules(max_frame_change_p90=0.8)).measurable


def test_echo_with_too_few_cavity_frames_is_not_measurable():
    masks = np.zeros((20, 50, 50), bool)
    a = assess_echo(masks, 0.05, EchoRules())
    assert not a.measurable and a.ef_percent is None and "fewer than" in a.reason


# --- Agatston 1990 -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("peak", "weight"), [(129, 0), (130, 1), (199, 1), (200, 2), (299, 2), (300, 3), (399, 3), (400, 4), (1500, 4)]
)
def test_agatston_density_factor(peak, weight):
    assert agatston_weight(peak) == weight


def test_slice_scores_on_a_hand_built_slice():
    # 0.5 mm pixels (0.25 mm2): lesion A 4 x 4 px = 4 mm2 peak 250 HU → 8; lesion B 2 x 2 px =
    # 1 mm2 peak 450 HU → 4; lesion C 1 x 3 px = 0.75 mm2 → below 1 mm2, ignored; 129 HU ignored.
    hu = np.full((40, 40), 40.0)
    hu[5:9, 5:9] = 150.0
    hu[6, 6] = 250.0
    hu[20:22, 20:22] = 450.0
    hu[30, 30:33] = 600.0
    hu[35:38, 5:20] = 129.0
    scores = sorted(slice_scores(hu, 0.25))
    assert scores == [(1.0, 450.0, 4, 4.0), (4.0, 250.0, 2, 8.0)]


def test_agatston_total_per_slice_and_cac_drs():
    # Two slices of the same lesion: slice 1 area 2 mm2 at 350 HU (x3 = 6), slice 2 area 3 mm2
    # at 180 HU (x1 = 3): lesion score 9 at 3 mm increments; bone-sized structures are excluded.
    # Lesions lie in epicardial fat (-100 HU) here, as coronary calcium does.
    hu = np.full((4, 60, 60), -100.0)
    hu[1, 10:12, 10:14] = 350.0  # 8 px * 0.25 = 2 mm2
    hu[2, 10:13, 10:14] = 180.0  # 12 px * 0.25 = 3 mm2
    hu[:, 40:60, 40:60] = 500.0  # "bone": 4 x 400 px x 0.75 mm3 = 1200 mm3 → excluded at 1000 mm3
    a, mask = score_calcium(hu, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0), CalciumRules(max_lesion_volume_mm3=1000.0))
    assert a.agatston_total == pytest.approx(9.0)
    assert len(a.lesions) == 1 and a.lesions[0].slices == (1, 2) and a.lesions[0].peak_hu == 350.0
    assert a.cac_drs == "A1" and a.standard_increment and not a.vessels_labelled
    assert mask.max() == 1 and int((mask == 1).sum()) == 20


def test_non_standard_increment_is_scaled_and_flagged():
    hu = np.full((3, 30, 30), -100.0)
    hu[1, 10:14, 10:14] = 420.0  # 16 px * 0.25 = 4 mm2 x 4 = 16 at 3 mm
    a = assess_calcium(hu, (1.5, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert a.agatston_total == pytest.approx(16.0 * 0.5)
    assert not a.standard_increment and a.increment_factor == 0.5


@pytest.mark.parametrize(
    ("score", "category"), [(0, "A0"), (1, "A1"), (99, "A1"), (99.9, "A1"), (100, "A2"), (299, "A2"), (299.9, "A2"), (300, "A3"), (2500, "A3")]
)
def test_cac_drs_boundaries(score, category):
    assert cac_drs(score) == category


def test_per_vessel_scores_with_centrelines():
    hu = np.full((3, 40, 40), -100.0)
    hu[1, 5:9, 5:9] = 420.0  # 4 mm2 x 4 = 16, centre near (3, 3.25, 3.25) mm
    hu[1, 30:32, 30:34] = 210.0  # 2 mm2 x 2 = 4, centre near (3, 15.25, 15.75) mm
    lines = {"LAD": np.array([[3.0, 3.0, 3.0]]), "RCA": np.array([[3.0, 15.0, 15.0]])}
    a = assess_calcium(hu, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0), centrelines_zyx_mm=lines)
    assert a.agatston_by_vessel == {"LM": 0.0, "LAD": 16.0, "LCx": 0.0, "RCA": 4.0}
    assert a.n_vessels == 2 and "N2" in a.recommendation


def test_compare_to_truth_lines():
    assert "vs truth 34.8" in compare_to_truth({"agatston_total": 34.79, "cac_drs": "A1"}, {"agatston_total": 34.79})
    line = compare_to_truth({"measurable": True, "ef_percent": 35.0, "edv_ml": 110, "esv_ml": 71.5},
                            {"ef": 0.34, "edv_ml": 109.5, "esv_ml": 72.0})
    assert "error +1.0" in line


# --- Coronary calcium only (pathways/coronary_candidates.py): worked cases --------------------
def _chest(slices: int = 8) -> np.ndarray:
    """A small non-contrast chest at 0.5 mm pixels, 3 mm slices: lungs left and right (-850 HU),
    between them a heart (40 HU, radius 12.5 mm) in an epicardial fat ring (-100 HU, 3 mm)."""
    hu = np.full((slices, 160, 160), 40.0)
    hu[:, 10:150, 8:48] = -850.0
    hu[:, 10:150, 112:152] = -850.0
    rows, cols = np.mgrid[0:160, 0:160]
    r = np.hypot(rows - 80, cols - 80)
    hu[:, r < 31] = -100.0
    hu[:, r < 25] = 40.0
    return hu


def _blob(hu: np.ndarray, row: int, col: int, value: float, size: int = 4, slices=(3, 4)) -> None:
    for k in slices:
        hu[k, row:row + size, col:col + size] = value


def test_a_coronary_plaque_in_epicardial_fat_is_scored():
    hu = _chest()
    _blob(hu, 78, 106, 350.0)  # in the fat ring, 4 x 4 px = 4 mm2 x 3 on two slices = 24
    a = assess_calcium(hu, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert a.measurable and a.agatston_total == pytest.approx(24.0) and a.excluded == ()


@pytest.mark.parametrize(("draw", "reason"), [
    (lambda hu: _blob(hu, 78, 78, 450.0), "not-epicardial"),  # aortic valve: in the heart's blood, no fat near
    (lambda hu: _blob(hu, 60, 0, 700.0, size=8), "field-edge"),  # a rib end cut by the field's edge
    (lambda hu: _blob(hu, 2, 70, 500.0), "chest-wall"),  # costal cartilage in front of the lungs
    (lambda hu: _blob(hu, 78, 104, 2400.0), "metal"),  # a wire or stent strut: far denser than plaque
    (lambda hu: [hu.__setitem__((k, slice(74, 84), slice(102, 112)), np.where(
        np.abs(np.hypot(*np.mgrid[-4.5:5.5, -4.5:5.5]) - 3.5) < 1.0, 1500.0, hu[k, 74:84, 102:112]))
        for k in (2, 3, 4)], "metal"),  # a stent seen end on: a ring round its lumen on 3 slices
])
def test_a_valve_a_rib_end_cartilage_and_a_stent_score_no_coronary_calcium(draw, reason):
    hu = _chest()
    draw(hu)
    a = assess_calcium(hu, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert a.measurable and a.agatston_total == 0.0 and a.cac_drs == "A0" and a.lesions == ()
    assert [e.reason for e in a.excluded] == [reason]
    text = calcium_report_content(a).text  # the reader is shown valve calcium and metal, not ribs
    assert (EXCLUSION_WORDS[reason] in text) == (reason in ("not-epicardial", "metal"))


def test_bone_and_what_lies_beside_it_are_not_coronary():
    hu = _chest(slices=12)
    hu[:, 150:160, 60:100] = 600.0  # a vertebra: 12 x 10 x 40 px x 0.75 mm3 = 3,600 mm3, above the lesion limit
    _blob(hu, 145, 70, 500.0)  # an osteophyte 1.5 mm from it
    a = assess_calcium(hu, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert a.agatston_total == 0.0 and [e.reason for e in a.excluded] == ["bone"]


@pytest.mark.parametrize(("kvp", "words"), [
    ((120.0,), ""), ((100.0,), "acquired at 100 kVp"), ((), "tube voltage (KVP) not recorded"),
    ((100.0, 120.0), "acquired at 100 kVp"), ((135.0,), "acquired at 135 kVp"),
])
def test_only_a_120_kvp_scan_is_scored(kvp, words):
    hu = _chest()
    _blob(hu, 78, 106, 350.0)
    a = assess_calcium(hu, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0), kvp_values=kvp)
    assert a.measurable == (words == "")
    assert (words in a.reason) if words else a.reason == ""
    if words:
        assert a.agatston_total is None and a.cac_drs is None and "not measurable" in a.recommendation


def test_a_contrast_enhanced_scan_is_not_measurable_from_its_image_or_its_header():
    hu = _chest(slices=40)
    rows, cols = np.mgrid[0:160, 0:160]
    hu[:, np.hypot(rows - 80, cols - 80) < 24] = 320.0  # the blood pool enhanced: 40 x 3 mm x 452 mm2 = 54 ml
    a = assess_calcium(hu, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert not a.measurable and "contrast-enhanced" in a.reason and "median 320 HU" in a.reason
    plain = _chest()
    a = assess_calcium(plain, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0), contrast_agent="Omnipaque 350")
    assert not a.measurable and "Contrast/Bolus Agent 'Omnipaque 350'" in a.reason
    assert assess_calcium(plain, (3.0, 0.5, 0.5), (0.0, 0.0, 0.0)).measurable
