"""Doubtful input or an implausible model answer ends a pathway run "not measurable", never a conclusion.

Through the production path: the order by the HL7 intake, real DICOM files (written by the
synthetic generator, then altered with pydicom) into the store, the readiness attach, the
pathway flow under a real Prefect API. Hazards H-04 (geometry) and H-05 (implausible output)
of docs/clinical-safety/hazard-log.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Delivery, PathwayRun, Result, Study
from tests.conftest import make_ready

pytestmark = pytest.mark.slow


def _study_with(tmp_path: Path, registry, kind: str, seed: int, alter):  # noqa: ANN001, ANN202
    """A synthetic study whose DICOM files pass through `alter(files) -> [bytes]` before ingest."""
    from integrations.dicom.store import ingest_instances
    from radpath.synth import generate
    from tests.hl7_fixtures import receive

    (study,) = generate(kind, 1, seed, tmp_path / "synthetic")
    receive(Path(study.order_path).read_bytes().decode(), registry)
    files = sorted(Path(study.dicom_dir).rglob("*.dcm"), key=lambda f: int(f.stem))
    ingest_instances(alter(files))
    (run_id,) = make_ready(study.study_uid)
    return run_id


def _outcome(run_id: str):  # noqa: ANN202
    from flows.dispatch import run_pathway

    state = asyncio.run(run_pathway(run_id))
    with session_scope() as s:
        run = s.get(PathwayRun, run_id)
        audits = [a for a in s.exec(select(AuditEvent)).all() if a.action == "run.not_measurable"]
        return state, run, s.exec(select(Result)).all(), s.exec(select(Delivery)).all(), audits


def test_a_series_missing_a_slice_is_not_measurable_and_nothing_is_delivered(prefect_api, radpath_env, registry, tmp_path):
    """One slice of a 40-slice calcium-scoring CT never arrived: no Agatston score from it."""
    def drop_slice_20(files):  # noqa: ANN001, ANN202
        return [f.read_bytes() for f in files if f.stem != "20"]

    run_id = _study_with(tmp_path, registry, "cardiac-ct", 3, drop_slice_20)
    state, run, results, deliveries, audits = _outcome(run_id)
    assert state.is_completed() and state.name == "NotMeasurable", state.message
    assert "missing-slice" in state.message
    assert run.status == "not_measurable" and "missing-slice" in run.status_reason and run.finished_at
    assert results == [] and deliveries == []  # no conclusion made, none sent
    assert len(audits) == 1 and "missing-slice" in audits[0].detail["reason"]


def _retagged(files, **tags):  # noqa: ANN001, ANN003, ANN202
    """The files' bytes with these attributes set (pydicom keywords)."""
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize(("tags", "words"), [
    ({"KVP": "100"}, "acquired at 100 kVp"),
    ({"ContrastBolusAgent": "Iohexol 350"}, "Contrast/Bolus Agent 'Iohexol 350'"),
])
def test_a_calcium_scan_at_100_kvp_or_with_contrast_is_not_measurable(prefect_api, radpath_env, registry, tmp_path,
                                                                     tags, words):
    """Agatston's 130 HU threshold and density factors hold at 120 kVp on a non-contrast scan
    (SCCT 2017): the same study at 100 kVp, or with a contrast agent recorded, gets no score."""
    run_id = _study_with(tmp_path, registry, "cardiac-ct", 3, lambda files: _retagged(files, **tags))
    state, run, results, deliveries, audits = _outcome(run_id)
    assert state.is_completed() and state.name == "NotMeasurable", state.message
    assert words in state.message and words in run.status_reason
    assert results == [] and deliveries == []
    assert len(audits) == 1 and words in audits[0].detail["reason"]


def test_a_brain_measured_at_the_wrong_scale_is_not_measurable(prefect_api, radpath_env, registry, tmp_path):
    """A phantom head whose files claim 1.5 mm pixels (it was made at 1 mm): inside the model's
    input domain, so only the output gate can catch it. The model then reports a 2.6 l skull
    and a 7 ml hippocampus, which no adult has; the pathway must not grade atrophy from it."""
    run_id = _study_with(tmp_path, registry, "brain-mri", 21, lambda files: _retagged(files, PixelSpacing=[1.5, 1.5]))
    state, run, results, deliveries, audits = _outcome(run_id)
    assert state.name == "NotMeasurable", state.message
    assert "intracranial ml" in state.message and "outside the physiological range (900–2200 ml)" in state.message
    assert run.status == "not_measurable" and results == [] and deliveries == []
    assert len(audits) == 1


def test_late_images_that_fill_the_gap_are_measured(prefect_api, radpath_env, registry, tmp_path):
    """Not measurable is terminal for that revision, not for the study: the missing slice arrives
    late and the readiness sweep re-runs the pathway, which now scores it."""
    import datetime as dt

    from integrations.db.studies import sweep_readiness
    from integrations.dicom.store import ingest_instances

    kept: list[Path] = []

    def hold_back_slice_20(files):  # noqa: ANN001, ANN202
        kept.extend(f for f in files if f.stem == "20")
        return [f.read_bytes() for f in files if f.stem != "20"]

    run_id = _study_with(tmp_path, registry, "cardiac-ct", 3, hold_back_slice_20)
    state, *_ = _outcome(run_id)
    assert state.name == "NotMeasurable"
    ingest_instances(f.read_bytes() for f in kept)
    with session_scope() as s:
        last = s.exec(select(Study)).one().last_received_at
    (again,) = sweep_readiness(now=last + dt.timedelta(seconds=61), registry=registry)
    assert again.run_ids == (run_id,) and again.rerun
    state, run, results, deliveries, _ = _outcome(run_id)
    assert state.name == "Delivered", state.message
    assert run.status == "completed" and len(results) == 1 and deliveries


def test_a_real_brain_is_never_graded_from_the_phantom_fitted_model(prefect_api, radpath_env, registry, tmp_path):
    """Colin27, a real adult T1 (Debian mricron-data), as a DICOM MR series for a real order. The
    phantom-fitted model measures it as a 3.1 l skull with a 340 ml left hippocampus (its
    ch2bet brain mask is 1.74 l): the pathway ends not measurable, with no atrophy verdict. A
    better model would instead have to come within 10 % of the mask and the adult hippocampal range."""
    from tests import colin27

    if not colin27.HEAD.exists():
        pytest.skip("Debian package mricron-data is not installed (scripts/install-system-deps.sh installs it)")
    out = tmp_path / "colin27"
    out.mkdir()
    run_id = _study_with(tmp_path, registry, "brain-mri", 21, lambda files: colin27.write_colin27_over(files, out))
    state, run, results, deliveries, audits = _outcome(run_id)
    if state.name == "NotMeasurable":
        assert "intracranial ml" in state.message or "hippocampus" in state.message
        assert run.status == "not_measurable" and results == [] and deliveries == [] and len(audits) == 1
    else:  # only a model that measures a real brain plausibly may deliver
        assert state.name == "Delivered", state.message
        (result,) = results
        volumes = result.assessment["volumes"]
        assert abs(volumes["intracranial_ml"] - colin27.brain_mask_ml()) / colin27.brain_mask_ml() < 0.10
        assert all(2.0 <= volumes[f"hippocampus_{s}_ml"] <= 5.0 for s in ("left", "right"))


@pytest.mark.parametrize(("tags", "sent"), [({}, False), ({"BurnedInAnnotation": "YES"}, False),
                                            ({"BurnedInAnnotation": "NO"}, True)])
def test_an_echo_cine_that_may_carry_burned_in_text_never_goes_to_a_remote_inference_service(
        prefect_api, radpath_env, registry, tmp_path, monkeypatch, tags, sent):
    """Ultrasound machines burn the patient's name into the image; the tensors sent to a remote
    service are pixels. A cine that says Burned In Annotation YES, or does not say NO, is not
    sent (hazard H-28). The service's address has nothing listening: the cine marked NO is sent,
    so its run fails on the connection, which shows the refusal is the only thing stopping the others."""
    import json

    from integrations.settings import reset_settings
    from tests.served import free_port

    monkeypatch.setenv("RADPATH_INFERENCE_SERVICES", json.dumps({"echo-lv": {"url": f"http://127.0.0.1:{free_port()}",
                                                                            "timeout_seconds": 5}}))
    reset_settings()
    run_id = _study_with(tmp_path, registry, "echo", 5, lambda files: _retagged(files, **tags))
    state, run, results, deliveries, audits = _outcome(run_id)
    if sent:
        assert state.is_failed() and "TransientError" in str(state.message), state.message
        return
    assert state.name == "NotMeasurable", state.message
    assert "not sent to the remote inference service" in state.message and "Burned In Annotation" in run.status_reason
    assert results == [] and deliveries == [] and len(audits) == 1


def test_burned_in_annotation_of_a_series_and_what_it_keeps_from_leaving():
    from pathways.disclosure import burned_in_problem, burned_in_value

    assert burned_in_value(["NO", "NO"]) == "NO" and burned_in_value(["NO", "YES"]) == "YES"
    assert burned_in_value(["NO", None]) == "" and burned_in_value([]) == ""
    assert "YES" in burned_in_problem("YES", "CT")
    assert "US images commonly carry" in burned_in_problem("", "US") and burned_in_problem("NO", "US") is None
    assert burned_in_problem("", "CT") is None and burned_in_problem("", "MR") is None
