"""The lung detector's evaluation harness: FROC and the LUNA16 CPM, with worked values.

Pure arithmetic on hand-made truth and detections (no model runs): the held-out campaign
itself is `models/lung_nodule/evaluate.py --heldout N`, a bench, not a test.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from models.lung_nodule.evaluate import froc, match


def _truth(x, diameter):
    return SimpleNamespace(centre_xyz_mm=(x, 0.0, 0.0), diameter_mm=diameter)


def _det(x, confidence):
    return SimpleNamespace(centre_xyz_mm=(x, 1.0, 0.0), confidence=confidence)


def test_froc_and_cpm_worked_example():
    """Scan A: nodules at x=0 (10 mm) and x=50 (8 mm), found at 0.9 and 0.3, one false positive at 0.8.
    Scan B: a 6 mm nodule found at 0.5, one false positive at 0.95. Lowering the threshold gives
    (FP/scan, sensitivity) = (0.5, 0), (0.5, 1/3), (1, 1/3), (1, 2/3), (1, 1); LUNA16's CPM averages
    the best sensitivity at <= 1/8, 1/4, 1/2, 1, 2, 4, 8 FP/scan: (0 + 0 + 1/3 + 1 + 1 + 1 + 1) / 7."""
    scan_a = (SimpleNamespace(nodules=(_truth(0, 10), _truth(50, 8))), [_det(0, 0.9), _det(100, 0.8), _det(50, 0.3)])
    scan_b = (SimpleNamespace(nodules=(_truth(0, 6),)), [_det(-80, 0.95), _det(0, 0.5)])
    result = froc([scan_a, scan_b])
    at = result["sensitivity_at_fp_per_scan"]
    assert [at[k] for k in ("0.125", "0.25", "0.5", "1.0", "8.0")] == [0.0, 0.0, pytest.approx(1 / 3), 1.0, 1.0]
    assert result["cpm"] == pytest.approx((1 / 3 + 4) / 7)


def test_a_detection_matches_within_the_radius_or_5mm_and_only_once():
    phantom = SimpleNamespace(nodules=(_truth(0, 20), _truth(30, 4)))
    pairs, unmatched = match(phantom, [_det(9, 0.9), _det(8, 0.8), _det(34.5, 0.7)])
    assert [d.confidence if d else None for _, d in pairs] == [0.8, 0.7]  # closest first; 4.5 mm < 5 mm floor
    assert [d.confidence for d in unmatched] == [0.9]
