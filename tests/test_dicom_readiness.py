"""Study readiness from ledger state: quiet period, expected series, force-ready, orphans,
patient cross-check and the late-image policy (one synthetic chest CT, two series)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
import pytest
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, PathwayRun, Study
from integrations.db.ops import open_work
from integrations.db.studies import sweep_readiness
from integrations.dicom.store import ingest_instances
from pathways.registry import Registry
from tests.hl7_fixtures import receive
from integrations.db import runs
from integrations.db.runs import RunStatus


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    from radpath.synth import generate

    (study,) = generate("chest-ct", 1, 5, tmp_path_factory.mktemp("synth"))
    files = sorted(Path(study.dicom_dir).rglob("*.dcm"))
    thick, thin = [], []
    for f in files:
        (thin if float(pydicom.dcmread(f, stop_before_pixels=True).SliceThickness) <= 1.5 else thick).append(f)
    assert thin and thick
    return study, thick, thin


def _order(study, registry, nhs: str | None = None) -> str:
    raw = Path(study.order_path).read_text()
    if nhs:
        raw = raw.replace(raw.split("PID|1||")[1].split("^")[0], nhs, 1)
    outcome = receive(raw, registry).order
    (run_id,) = outcome.run_ids
    return run_id


def _ingest(files) -> dt.datetime:
    ingest_instances(f.read_bytes() for f in files)
    with session_scope() as s:
        return s.exec(select(Study)).one().last_received_at


def _run(run_id: str) -> PathwayRun:
    with session_scope() as s:
        return s.get(PathwayRun, run_id)


def test_quiet_period_then_ready_and_event_after_commit(radpath_env, registry, chest):
    study, thick, thin = chest
    run_id = _order(study, registry)
    assert sweep_readiness(registry=registry) == []
    assert [(w.stage, w.reason, w.study_key) for w in open_work()] == [("waiting for images", "waiting for images", None)]
    last = _ingest(thick + thin)
    assert sweep_readiness(now=last + dt.timedelta(seconds=30), registry=registry) == []
    assert _run(run_id).status_reason.startswith("quiet for 30 s of 60 s")
    seen = []
    ready = sweep_readiness(now=last + dt.timedelta(seconds=61), registry=registry, on_ready=lambda r: seen.append((r, _run(run_id).status)))
    assert [r.run_ids for r in ready] == [(run_id,)] and not ready[0].forced
    assert seen[0][1] == "ready"  # the callback (event) sees the committed ledger
    assert sweep_readiness(now=last + dt.timedelta(seconds=120), registry=registry) == []  # once


def test_missing_expected_series_waits_then_force_ready(radpath_env, registry, chest):
    study, thick, _ = chest
    run_id = _order(study, registry)
    last = _ingest(thick)
    assert sweep_readiness(now=last + dt.timedelta(seconds=300), registry=registry) == []
    assert _run(run_id).status_reason == "expected series not present yet"
    force = registry.get("lung-cancer-ct").readiness.force_ready_seconds
    (ready,) = sweep_readiness(now=last + dt.timedelta(seconds=force + 1), registry=registry)
    assert ready.forced and _run(run_id).status == "ready"


def test_per_modality_quiet_period_override(radpath_env, registry, chest, monkeypatch):
    from integrations.settings import reset_settings

    study, thick, thin = chest
    _order(study, registry)
    last = _ingest(thick + thin)
    monkeypatch.setenv("RADPATH_DICOM_QUIET_PERIOD_SECONDS", '{"CT": 5}')
    reset_settings()
    assert len(sweep_readiness(now=last + dt.timedelta(seconds=6), registry=registry)) == 1


def test_orphan_then_late_order_attaches(radpath_env, registry, chest):
    study, thick, thin = chest
    last = _ingest(thick + thin)
    orphan_after = radpath_env.dicom_orphan_after_seconds
    sweep_readiness(now=last + dt.timedelta(seconds=orphan_after + 1), registry=registry)
    with session_scope() as s:
        assert s.exec(select(Study)).one().status == "orphaned"
    run_id = _order(study, registry)
    (ready,) = sweep_readiness(now=last + dt.timedelta(seconds=orphan_after + 2), registry=registry)
    assert ready.run_ids == (run_id,)
    with session_scope() as s:
        assert s.exec(select(Study)).one().status == "ready"


def test_patient_mismatch_is_held(radpath_env, registry, chest):
    study, thick, thin = chest
    run_id = _order(study, registry, nhs="9434765919")  # a valid NHS number, not this patient's
    last = _ingest(thick + thin)
    assert sweep_readiness(now=last + dt.timedelta(seconds=61), registry=registry) == []
    assert _run(run_id).status == "waiting" and "patient does not" in _run(run_id).status_reason
    with session_scope() as s:
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "study.patient-mismatch")).first() is not None


@pytest.mark.parametrize("policy", ["supersede", "ignore"])
def test_late_images_policy(radpath_env, registry, chest, policy):
    study, thick, thin = chest
    spec = registry.get("lung-cancer-ct")
    registry = Registry(specs={spec.name: spec.model_copy(update={"readiness": spec.readiness.model_copy(update={"late_images": policy})})})
    run_id = _order(study, registry)
    last = _ingest(thick[:-5] + thin)
    (first,) = sweep_readiness(now=last + dt.timedelta(seconds=61), registry=registry)
    runs.set_status(run_id, RunStatus.RUNNING)
    runs.set_status(run_id, RunStatus.COMPLETED)
    late = _ingest(thick[-5:])
    assert sweep_readiness(now=late + dt.timedelta(seconds=10), registry=registry) == []  # not quiet yet
    again = sweep_readiness(now=late + dt.timedelta(seconds=61), registry=registry)
    with session_scope() as s:
        row = s.exec(select(Study)).one()
        actions = [a.action for a in s.exec(select(AuditEvent)).all()]
    assert row.late_instances == 0
    if policy == "supersede":
        assert [r.run_ids for r in again] == [(run_id,)] and again[0].rerun and again[0].revision == 1
        assert _run(run_id).status == "ready" and "re-run" in _run(run_id).status_reason
        assert "study.late-images.rerun" in actions
    else:
        assert again == [] and _run(run_id).status == "completed"
        assert "study.late-images.ignored" in actions
