"""Late images after a result: policy "supersede" re-runs the pathway and the new result
(study revision 1) supersedes the first; policy "ignore" records the images and stops there.

One synthetic cardiac CT (the fastest pathway) whose last slices arrive after the first result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlmodel import select

from integrations.db import ledger
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Delivery, PathwayRun, Result, Study
from integrations.db.studies import sweep_readiness
from integrations.dicom.store import ingest_instances
from integrations.settings import Settings
from pathways.registry import Registry
from tests.conftest import dciodvfy_errors
from tests.hl7_fixtures import receive
from integrations.db import runs
from integrations.db.runs import RunStatus

pytestmark = pytest.mark.slow

PATHWAY = "heart-failure-cardiac-ct"
HELD_BACK = 16  # the top slices (of 40), which arrive after the first result; some hold calcium


def test_result_id_of_revision_zero_is_unchanged():
    import uuid

    uid = "1.2.826.0.1.3680043.8.498.7"
    legacy = str(uuid.uuid5(ledger.RESULT_NAMESPACE, f"{uid}|{PATHWAY}|1.0.0"))
    assert ledger.result_id_for(uid, PATHWAY, "1.0.0") == legacy == ledger.result_id_for(uid, PATHWAY, "1.0.0", 0)
    assert ledger.result_id_for(uid, PATHWAY, "1.0.0", 1) not in {legacy, ledger.result_id_for(uid, PATHWAY, "1.0.0", 2)}


def _registry_with(registry: Registry, policy: str) -> Registry:
    spec = registry.get(PATHWAY)
    late = spec.model_copy(update={"readiness": spec.readiness.model_copy(update={"late_images": policy})})
    return Registry(specs={**registry.specs, PATHWAY: late})


def _ingest(files) -> dt.datetime:  # noqa: ANN001
    ingest_instances(f.read_bytes() for f in files)
    with session_scope() as s:
        return s.exec(select(Study)).one().last_received_at


def _run_flow(run_id: str) -> None:
    from flows.dispatch import run_pathway

    state = asyncio.run(run_pathway(run_id))
    assert state.is_completed() and state.name == "Delivered", state.message


def _bundle_report(data_dir: Path, result_id: str) -> dict:
    bundle = json.loads((data_dir / "results" / result_id / "ehr" / "report-bundle.json").read_text())
    (report,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    return report


def _delivered(settings: Settings, delivery: Delivery, name: str) -> Path:
    """The payload file as it landed in the destination's file-drop folder."""
    return settings.outbox_dir / delivery.destination / delivery.idempotency_key / name


def _oru_fields(er7: str, segment: str) -> list[list[str]]:
    return [s.split("|") for s in er7.split("\r") if s.startswith(segment + "|")]


def _first_result(tmp_path: Path, registry: Registry, policy: str):  # noqa: ANN202
    """Order, all but the last slices, ready, flow, result; then the last slices arrive late."""
    from radpath.synth import generate

    (study,) = generate("cardiac-ct", 1, 3, tmp_path / "synthetic")
    raw = Path(study.order_path).read_text()
    (run_id,) = receive(raw, registry).order.run_ids
    # Files are named by instance number; hold back the top slices, not the last names in
    # string order (10.dcm < 2.dcm), which would leave a gap that geometry checks refuse.
    files = sorted(Path(study.dicom_dir).rglob("*.dcm"), key=lambda f: int(f.stem))
    last = _ingest(files[:-HELD_BACK])
    policy_registry = _registry_with(registry, policy)
    (ready,) = sweep_readiness(now=last + dt.timedelta(seconds=61), registry=policy_registry)
    assert ready.run_ids == (run_id,) and not ready.rerun
    _run_flow(run_id)
    late = _ingest(files[-HELD_BACK:])
    again = sweep_readiness(now=late + dt.timedelta(seconds=61), registry=policy_registry)
    return run_id, again


def _results() -> list[Result]:
    with session_scope() as s:
        return sorted(s.exec(select(Result)).all(), key=lambda r: r.study_revision)


def test_late_slices_in_the_same_series_are_never_served_from_the_inference_cache(radpath_env):
    """The lung and brain models are cached by their input; the key names the exact slices,
    so a re-run after late images joined the series runs the model again on all of them."""
    from pathways.findings import VolumeRef
    from pathways.spec import ModelRef
    from tasks.inference import _detection_cache_key, _volumetry_cache_key

    def volume(slices: int) -> VolumeRef:
        return VolumeRef(series_uid="1.2.3", path="v.npy", shape_zyx=(slices, 8, 8), spacing_zyx_mm=(1, 1, 1),
                         origin_xyz_mm=(0, 0, 0), sop_instance_uids=tuple(f"1.2.3.{i}" for i in range(slices)))

    model = ModelRef(name="m", path="models/m.onnx", sha256="0" * 64)
    early, late = volume(60), volume(64)
    assert early.content_key != late.content_key and early.content_key == volume(60).content_key
    for key in (_detection_cache_key, _volumetry_cache_key):
        assert key(None, {"volume": early, "model": model}) != key(None, {"volume": late, "model": model})


def test_late_images_supersede_the_first_result(prefect_api, radpath_env, registry, tmp_path):
    run_id, again = _first_result(tmp_path, registry, "supersede")
    assert [r.run_ids for r in again] == [(run_id,)] and again[0].rerun and again[0].revision == 1
    with session_scope() as s:
        assert s.get(PathwayRun, run_id).status == "ready"
    _run_flow(run_id)

    first, second = _results()
    assert (first.study_revision, second.study_revision) == (0, 1)
    assert first.superseded_by == second.id and second.superseded_by is None
    assert second.id == ledger.result_id_for(first.study_uid, PATHWAY, first.model_version, 1) != first.id
    assert "supersedes an earlier result" in second.report["text"] and first.id in second.report["text"]
    assert "supersedes" not in first.report["text"]
    # More slices were scored the second time: the re-run really read the late images.
    assert second.assessment != first.assessment
    with session_scope() as s:
        deliveries = s.exec(select(Delivery).where(Delivery.result_id == second.id)).all()
        old = s.exec(select(Delivery).where(Delivery.result_id == first.id)).all()
        audits = s.exec(select(AuditEvent)).all()
    assert {d.destination for d in deliveries} == {"pacs", "ris", "ehr"}
    assert all(d.status == "delivered" and d.attempts == 1 for d in deliveries + old)
    delivered = [a.entity_id for a in audits if a.action == "delivery.delivered"]
    assert sorted(delivered) == sorted(d.id for d in deliveries + old)  # each row sent once
    superseded = [a for a in audits if a.action == "result.superseded"]
    assert [(a.entity_id, a.detail["superseded_by"]) for a in superseded] == [(first.id, second.id)]
    # Neither result was reviewed: both go out preliminary (pathways.result_status); superseding
    # never makes an unreviewed result final. FHIR updates the EHR's resources in place.
    assert _bundle_report(radpath_env.data_dir, first.id)["status"] == "preliminary"
    assert _bundle_report(radpath_env.data_dir, second.id)["status"] == "preliminary"
    sent = {d.destination: d for d in deliveries}
    sent_before = {d.destination: d for d in old}
    # HL7 v2: OBR-25 (table 0123) and OBX-11 (table 0085) stay P (preliminary; C is only for a
    # reviewed result replacing a final one), against the same placer/filler order numbers.
    # read_bytes, not read_text: universal newlines would turn the \r segment separators into \n
    oru_before = _delivered(radpath_env, sent_before["ris"], "oru-r01.hl7").read_bytes().decode()
    oru = _delivered(radpath_env, sent["ris"], "oru-r01.hl7").read_bytes().decode()
    assert parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT).validate() is True
    for er7, status in ((oru_before, "P"), (oru, "P")):
        assert [obr[25] for obr in _oru_fields(er7, "OBR")] == [status]
        assert {obx[11] for obx in _oru_fields(er7, "OBX")} == {status}
    assert [s[2:4] for s in _oru_fields(oru, "ORC") + _oru_fields(oru, "OBR")] == [
        s[2:4] for s in _oru_fields(oru_before, "ORC") + _oru_fields(oru_before, "OBR")
    ]
    # DICOM SR: the new SR (its own UIDs) names the earlier one in the Predecessor Documents
    # Sequence (PS3.3 Table C.17-2); the first SR has none.
    sr_before = pydicom.dcmread(_delivered(radpath_env, sent_before["pacs"], "sr.dcm"))
    sr_path = _delivered(radpath_env, sent["pacs"], "sr.dcm")
    sr = pydicom.dcmread(sr_path)
    assert "PredecessorDocumentsSequence" not in sr_before
    assert sr.SOPInstanceUID != sr_before.SOPInstanceUID
    (study,) = sr.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (instance,) = series.ReferencedSOPSequence
    assert (study.StudyInstanceUID, series.SeriesInstanceUID, instance.ReferencedSOPClassUID,
            instance.ReferencedSOPInstanceUID) == (sr_before.StudyInstanceUID, sr_before.SeriesInstanceUID,
                                                   sr_before.SOPClassUID, sr_before.SOPInstanceUID)
    assert dciodvfy_errors(sr_path) == []

    # A re-driven flow for the same revision finds the existing result: nothing new, nothing resent.
    runs.set_status(run_id, RunStatus.READY)
    _run_flow(run_id)
    assert [r.id for r in _results()] == [first.id, second.id]
    with session_scope() as s:
        assert all(d.attempts == 1 for d in s.exec(select(Delivery)).all())


def test_late_images_ignored_leave_one_result(prefect_api, radpath_env, registry, tmp_path):
    run_id, again = _first_result(tmp_path, registry, "ignore")
    assert again == []
    (only,) = _results()
    assert only.study_revision == 0 and only.superseded_by is None
    with session_scope() as s:
        assert s.get(PathwayRun, run_id).status == "completed"
        study = s.exec(select(Study)).one()
        ignored = s.exec(select(AuditEvent).where(AuditEvent.action == "study.late-images.ignored")).all()
    assert study.revision == 0 and study.late_instances == 0
    assert [(a.entity_id, a.detail["instances"]) for a in ignored] == [(study.id, HELD_BACK)]
