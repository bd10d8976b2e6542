"""The brain volumetry model on held-out synthetic brains with known truth (seeds 7000..)."""

from __future__ import annotations

import numpy as np
import pytest

from integrations.inference.brain_volumetry import HIPPO_LEFT, HIPPO_RIGHT, INTRACRANIAL, measure_brain
from integrations.inference.onnx_model import ModelChecksumError, load_model
from pathways.registry import SPECS_DIR, load_registry, model_path
from radpath.synth.brain_mri import make_brain_mri

# Tolerances stated on models/brain_volumetry/MODEL_CARD.md
ICV_BRAIN_TOLERANCE = 0.01  # relative volume error
HIPPOCAMPUS_TOLERANCE = 0.03
HIPPOCAMPUS_MIN_DICE = 0.95


def _spec():
    return load_registry([SPECS_DIR / "dementia_mri.yaml"]).get("dementia-mri")


@pytest.fixture(scope="module")
def model():
    spec = _spec()
    return load_model(model_path(spec), expected_sha256=spec.model.sha256)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize(("seed", "atrophy", "roll"), [(7000, 0.15, (0, 0, 0)), (7001, 0.9, (4, -6, 5))])
def test_volumes_and_overlap_within_tolerance(model, seed, atrophy, roll):
    """A shifted head (roll) exercises the centroid placement; the phantom's margins are air."""
    ph = make_brain_mri(seed, atrophy)
    t1, truth = np.roll(ph.t1, roll, axis=(0, 1, 2)), np.roll(ph.labels, roll, axis=(0, 1, 2))
    got = measure_brain(t1, ph.spacing_zyx_mm, model)
    for measured, expected, tolerance in (
        (got.intracranial_ml, ph.intracranial_volume_ml, ICV_BRAIN_TOLERANCE),
        (got.brain_ml, ph.brain_volume_ml, ICV_BRAIN_TOLERANCE),
        (got.hippocampus_left_ml, ph.hippocampus_left_ml, HIPPOCAMPUS_TOLERANCE),
        (got.hippocampus_right_ml, ph.hippocampus_right_ml, HIPPOCAMPUS_TOLERANCE),
    ):
        assert abs(measured - expected) / expected < tolerance, (measured, expected)
    assert _dice(got.labels == HIPPO_LEFT, truth == 5) > HIPPOCAMPUS_MIN_DICE
    assert _dice(got.labels == HIPPO_RIGHT, truth == 6) > HIPPOCAMPUS_MIN_DICE
    assert _dice(np.isin(got.labels, INTRACRANIAL), np.isin(truth, [1, 2, 3, 4, 5, 6])) > 0.99
    assert got.labels.shape == t1.shape


def test_atrophy_lowers_the_measured_hippocampi(model):
    young, old = (measure_brain(make_brain_mri(7002, a).t1, (1.0, 1.0, 1.0), model) for a in (0.0, 1.0))
    assert old.hippocampus_left_ml < 0.8 * young.hippocampus_left_ml
    assert old.brain_ml < young.brain_ml


def test_a_model_file_with_another_checksum_is_refused():
    path = model_path(_spec())
    with pytest.raises(ModelChecksumError):
        load_model(path, expected_sha256="0" * 64)
