"""Model cards: each model's input domain and output ranges, with worked values (hazard H-05)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pathways.model_card import Range, input_problems, output_problems
from pathways.registry import PROJECT_ROOT, SPECS_DIR, RegistryError, load_registry


@pytest.fixture(scope="module")
def cards():
    registry = load_registry()
    return {name: registry.card(name) for name in registry.specs}


def test_every_model_has_a_card_naming_it_and_rules_only_pathways_have_none(cards):
    assert cards["heart-failure-cardiac-ct"] is None  # Agatston scoring: rules, no model
    for name in ("dementia-mri", "heart-failure-echo", "lung-cancer-ct"):
        card = cards[name]
        assert card.outputs and card.input_domain.modalities
        assert all(r.source for r in card.outputs.values())  # every bound is justified
        assert card.real_data_validation is None  # honest: phantoms only, so far


def test_the_real_brain_the_issue_reported_is_implausible_and_a_phantom_is_not(cards):
    """Colin27 (a real adult T1) measured by the phantom-fitted model: ICV 3,100 ml and a 340 ml
    left hippocampus (adults: about 1,200-1,800 ml and 3-4.5 ml). A phantom measures 1,259 ml and 3.6 ml."""
    brain = cards["dementia-mri"]
    colin = {"intracranial_ml": 3100.0, "brain_ml": 1500.0, "hippocampus_left_ml": 340.0, "hippocampus_right_ml": 3.9}
    problems = output_problems(brain, colin)
    assert problems == ["intracranial ml 3100 is outside the physiological range (900–2200 ml)",
                        "hippocampus left ml 340 is outside the physiological range (1–6.5 ml)"]
    phantom = {"intracranial_ml": 1259.0, "brain_ml": 930.0, "hippocampus_left_ml": 3.58, "hippocampus_right_ml": 3.70}
    assert output_problems(brain, phantom) == []


def test_every_nodule_is_checked_and_a_missing_value_is_not_a_problem(cards):
    lung = cards["lung-cancer-ct"]
    assert output_problems(lung, {"nodule_count": 2, "nodule_long_axis_mm": [6.0, 31.0]}) == []
    assert output_problems(lung, {"nodule_count": 0, "nodule_long_axis_mm": []}) == []
    assert output_problems(lung, {"nodule_count": 2, "nodule_long_axis_mm": [6.0, 140.0]}) == [
        "nodule long axis mm 140 is outside the physiological range (at most 100 mm)"]
    assert output_problems(lung, {"nodule_count": 45}) == ["nodule count 45 is outside the physiological range (at most 30 nodules)"]
    echo = cards["heart-failure-echo"]
    assert output_problems(echo, {"edv_ml": None, "esv_ml": None, "ef_percent": None}) == []  # not measured
    assert output_problems(echo, {"edv_ml": 140.0, "esv_ml": 60.0, "ef_percent": 57.1}) == []
    assert output_problems(echo, {"edv_ml": 900.0, "esv_ml": 60.0, "ef_percent": 93.3}) == [
        "edv ml 900 is outside the physiological range (40–500 ml)",
        "ef percent 93.3 is outside the physiological range (5–90 %)"]


def test_the_25_ml_adult_lv_the_issue_reported_is_implausible(cards):
    """An independent cine with true EF 39.5 % and EDV 242 ml was measured EDV 25 ml, LV long
    axis 5.2 cm, EF 58 %: neither volume nor length is an adult LV, so no EF class is made."""
    echo = cards["heart-failure-echo"]
    assert output_problems(echo, {"edv_ml": 25.0, "esv_ml": 10.5, "ef_percent": 58.0, "long_axis_ed_cm": 5.2}) == [
        "edv ml 25 is outside the physiological range (40–500 ml)",
        "long axis ed cm 5.2 is outside the physiological range (5.5–13 cm)"]
    assert output_problems(echo, {"edv_ml": 40.0, "esv_ml": 8.0, "ef_percent": 80.0, "long_axis_ed_cm": 5.5}) == []
    assert output_problems(echo, {"edv_ml": 100.0, "esv_ml": 5.0, "ef_percent": 95.0, "long_axis_ed_cm": 8.0})[0] \
        == "esv ml 5 is outside the physiological range (8–450 ml)"


def test_input_outside_the_domain_is_named(cards):
    brain = cards["dementia-mri"]
    inside = dict(modality="MR", spacing_mm=(1.0, 1.0, 1.0), matrix=(192, 160), slices=160, age_years=70)
    assert input_problems(brain, **inside) == []
    assert input_problems(brain, **{**inside, "age_years": None}) == []  # age unknown: not refused for that
    assert input_problems(brain, **{**inside, "modality": "CT"}) == [
        "modality CT is not one the model was built for (MR)"]
    assert input_problems(brain, **{**inside, "spacing_mm": (5.0, 0.9, 0.9)}) == [
        "voxel spacing 5 is outside the model's input domain (0.7–1.6 mm)"]  # a 2D 5 mm stack is not 3D T1
    assert input_problems(brain, **{**inside, "age_years": 9}) == [
        "patient age 9 is outside the model's input domain (at least 18 years)"]
    echo = cards["heart-failure-echo"]
    assert input_problems(echo, modality="US", spacing_mm=(0.5,), matrix=(300, 400), frames=4, age_years=60) == [
        "frame count 4 is outside the model's input domain (10–500 frames)"]


def test_a_range_needs_a_bound_a_unit_and_a_source():
    assert Range(min=1, max=2, unit="ml", source="x").outside(2.5)
    assert not Range(min=1, max=2, unit="ml", source="x").outside(2.0)  # closed interval
    with pytest.raises(ValidationError):
        Range(unit="ml", source="x")
    with pytest.raises(ValidationError):
        Range(min=3, max=2, unit="ml", source="x")
    with pytest.raises(ValidationError):
        Range(min=1, max=2, unit="ml", source="")


def test_a_model_without_a_card_or_with_a_wrong_one_is_refused(tmp_path: Path):
    """The registry will not load a pathway whose model has no card: the gates would be missing."""
    spec = yaml.safe_load((SPECS_DIR / "dementia_mri.yaml").read_text())
    model = tmp_path / "model" / "brain_volumetry.onnx"
    model.parent.mkdir()
    shutil.copy(PROJECT_ROOT / spec["model"]["path"], model)
    spec["model"]["path"] = str(model)
    path = tmp_path / "dementia_mri.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(RegistryError, match="no model card card.yaml"):
        load_registry([path])
    card = yaml.safe_load((PROJECT_ROOT / "models/brain_volumetry/card.yaml").read_text())
    (model.parent / "card.yaml").write_text(yaml.safe_dump({**card, "model": "another-model"}))
    with pytest.raises(RegistryError, match="names model another-model"):
        load_registry([path])
    (model.parent / "card.yaml").write_text(yaml.safe_dump({**card, "outputs": {"brain_ml": {"min": 1, "unit": "ml"}}}))
    with pytest.raises(RegistryError, match="outputs.brain_ml.source"):
        load_registry([path])
