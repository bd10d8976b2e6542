"""The echo-lv ONNX model: its contract, accuracy on a held-out synthetic cine, and a run on a
real apical four-chamber cine (pydicom-data color3d_jpeg_baseline.dcm, no truth)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from integrations.dicom.multiframe import calibrated_region, load_cine_file, read_cine
from integrations.dicom.sr import build_measurement_report_sr
from integrations.inference.echo_lv import segment_lv
from integrations.inference.onnx_model import load_model
from pathways import codes
from pathways.heart_failure import assess_echo
from pathways.heart_failure_report import echo_report_content
from pathways.registry import SPECS_DIR, load_registry, model_path
from pathways.report import Code, PatientIdentity, ResultContext
from tests.conftest import require_tool

CARD_DIR = Path(__file__).resolve().parents[1] / "models" / "echo_lv"


@pytest.fixture(scope="module")
def model():
    spec = load_registry([SPECS_DIR / "heart_failure_echo.yaml"]).get("heart-failure-echo")
    return load_model(model_path(spec), expected_sha256=spec.model.sha256)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def test_model_contract_and_card(model):
    assert model.name == "echo-lv" and model.input_names == ["image"] and model.output_names == ["lv_probability"]
    out = model.run({"image": np.zeros((2, 1, 40, 48), np.float32)})["lv_probability"]
    assert out.shape == (2, 1, 40, 48) and np.all((out >= 0) & (out <= 1))
    metrics = json.loads((CARD_DIR / "metrics.json").read_text())
    assert metrics["sha256"] == model.sha256  # the card's numbers are this file's numbers
    assert model.sha256 in (CARD_DIR / "MODEL_CARD.md").read_text()


def test_held_out_synthetic_cine_within_card_tolerance(model):
    from radpath.synth.echo import make_echo

    ph = make_echo(2003)  # held out: training used seeds 1000-1015
    masks = segment_lv(ph.frames, ph.region, ph.cm_per_pixel, model)
    dice = np.mean([_dice(m, t) for m, t in zip(masks[::5], ph.lv_masks[::5], strict=True)])
    a = assess_echo(masks, ph.cm_per_pixel)
    assert dice >= 0.88
    assert a.measurable and abs(a.ef_percent - ph.ef * 100) <= 5.0
    assert abs(a.edv_ml - ph.edv_ml) / ph.edv_ml <= 0.12


def test_real_a4c_cine_runs_to_a_plausible_report(model, tmp_path):
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("color3d_jpeg_baseline.dcm"))  # 120-frame JPEG baseline YBR cine
    cine = load_cine_file(path, cache_dir=tmp_path)
    assert cine.n_frames == 120 and 0.04 < cine.cm_per_pixel < 0.06
    frames = np.asarray(read_cine(cine))
    assert frames.shape == (120, 480, 640) and frames.dtype == np.uint8
    masks = segment_lv(frames, cine.region, cine.cm_per_pixel, model)
    a = assess_echo(masks, cine.cm_per_pixel)
    # No truth for this cine: the claim is only that it runs and the numbers are physiological.
    if a.measurable:
        assert 20 <= a.edv_ml <= 400 and 5 <= a.ef_percent <= 90
    content = echo_report_content(a)
    assert "LVEF" in content.text or "not measurable" in content.text
    source = pydicom.dcmread(path, stop_before_pixels=True)
    ctx = ResultContext(
        result_id="hf-real-echo", pathway="heart-failure-echo", pathway_version="1.0.0", model_name=model.name,
        model_version=model.version, study_uid=source.StudyInstanceUID, source_series_uid=source.SeriesInstanceUID,
        accession_number="TEST1", placer_order_number="P1",
        procedure=Code(system=codes.SNOMED, code="433236007", display="Transthoracic echocardiography"),
        patient=PatientIdentity(), observed_at=dt.datetime(2025, 1, 6, tzinfo=dt.timezone.utc),
    )
    sr = build_measurement_report_sr(content, ctx, [source])
    out = tmp_path / "sr.dcm"
    sr.save_as(out, enforce_file_format=True)
    run = subprocess.run([require_tool("dciodvfy"), str(out)], capture_output=True, text=True, timeout=60)
    assert [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line] == []


def test_uncalibrated_cine_is_refused():
    ds = pydicom.Dataset()
    with pytest.raises(Exception, match="calibrated"):
        calibrated_region(ds)
