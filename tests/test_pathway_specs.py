"""Specs load, validate strictly and are cross-checked with every error reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pathways.registry import SPECS_DIR, RegistryError, load_registry
from pathways.series_selection import SeriesInfo, plane_of, select_series
from pathways.spec import SeriesRule

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def test_every_installed_spec_loads():
    registry = load_registry()
    assert "lung-cancer-ct" in registry.specs
    assert registry.match("169069000", "CT")[0].name == "lung-cancer-ct"
    assert registry.match("169069000", "MR") == []
    assert registry.rules("lung-cancer-ct").pet_ct_brock_probability == 0.10


def _write(tmp_path: Path, filename: str, **changes) -> Path:
    data = yaml.safe_load((SPECS_DIR / "lung_cancer_ct.yaml").read_text())
    data.update(changes)
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(data))
    return path


def test_all_errors_are_reported_together(tmp_path):
    bad = _write(
        tmp_path,
        "bad.yaml",
        name="lung-copy",
        flow="flows.lung_cancer_ct:no_such_flow",
        model={"name": "x", "path": "models/none.onnx", "sha256": "0" * 64},
        rules={"pet_ct_brock_probability": 2.0},
    )
    typo = _write(tmp_path, "typo.yaml", name="lung-typo", destinatons=[])
    with pytest.raises(RegistryError) as err:
        load_registry([SPECS_DIR / "lung_cancer_ct.yaml", bad, typo])
    text = "\n".join(err.value.errors)
    assert "no_such_flow" in text
    assert "models/none.onnx" in text
    assert "rules.pet_ct_brock_probability" in text
    assert "typo.yaml: destinatons" in text  # extra="forbid": a typo is an error
    assert "claimed by both" in text  # the copy overlaps the real lung spec


def test_series_selection_picks_thin_axial_and_says_why_others_lost():
    rule = SeriesRule(modality="CT", max_slice_thickness_mm=1.5, min_instances=60, description_exclude=("(?i)scout",))
    candidates = [
        SeriesInfo(series_uid="1", modality="CT", description="Scout", slice_thickness_mm=1.0, orientation=AXIAL, n_instances=200),
        SeriesInfo(series_uid="2", modality="CT", description="THORAX 5.0", slice_thickness_mm=5.0, orientation=AXIAL, n_instances=45),
        SeriesInfo(series_uid="3", modality="CT", description="THORAX 1.0", slice_thickness_mm=1.0, orientation=AXIAL, n_instances=220),
        SeriesInfo(series_uid="4", modality="CT", description="COR 1.0", slice_thickness_mm=1.0, orientation=CORONAL, n_instances=300),
        SeriesInfo(series_uid="5", modality="CT", description="THORAX 1.25", slice_thickness_mm=1.25, orientation=AXIAL, n_instances=180),
    ]
    best, reasons = select_series(candidates, rule)
    assert best.series_uid == "3"
    assert "exclude" in reasons["1"] and "thickness" in reasons["2"] and "coronal" in reasons["4"]
    assert reasons["5"] == "a better fitting series was chosen"
    assert select_series(candidates[:2], rule)[0] is None


def test_planes():
    assert plane_of(AXIAL) == "axial" and plane_of(CORONAL) == "coronal"
    assert plane_of((0, 1, 0, 0, 0, -1)) == "sagittal"
    assert plane_of((1, 0, 0, 0, 0.7071, 0.7071)) == "oblique"
