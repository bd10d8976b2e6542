"""Readiness from completion signals instead of the quiet period: the modality's MPPS (DICOM PS3.4
Annex F) and the RIS's exam-completed order status (HL7 ORC-5 CM).

The images go in through dcmtk's storescu to radpath's real SCP; the MPPS N-CREATE/N-SET come
from a pynetdicom SCU (dcmtk has no MPPS SCU; pynetdicom is the library modality simulators
use, talking DIMSE over a real association). The readiness sweep is the production one.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Order, PathwayRun, PerformedProcedureStep, Study
from integrations.db.studies import sweep_readiness
from integrations.dicom.scp import start_scp
from integrations.settings import get_settings, reset_settings
from tests.conftest import require_tool
from tests.hl7_fixtures import exam_completed, receive
from tests.modality import Modality

@pytest.fixture
def scp(radpath_env, monkeypatch):
    monkeypatch.setenv("RADPATH_DICOM_PORT", "0")
    monkeypatch.setenv("RADPATH_DICOM_PEERS", '{"MODALITY": [], "STORESCU": []}')
    monkeypatch.setenv("RADPATH_DICOM_MIN_FREE_MB", "0")
    reset_settings()
    ended = []
    handle = start_scp(get_settings(), wake_readiness=lambda: ended.append(1))
    handle.ended = ended
    yield handle
    handle.shutdown()


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    from radpath.synth import generate

    (study,) = generate("chest-ct", 1, 5, tmp_path_factory.mktemp("synth"))
    files = sorted(Path(study.dicom_dir).rglob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return study, files, str(first.StudyInstanceUID), str(first.AccessionNumber), uids


def _order(study, registry) -> str:
    (run_id,) = receive(Path(study.order_path).read_text(), registry).order.run_ids
    return run_id


def _store(port: int, files) -> dt.datetime:
    done = subprocess.run([require_tool("storescu"), "-aet", "STORESCU", "-aec", "RADPATH", "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with session_scope() as s:
        return s.exec(select(Study)).one().last_received_at


def _run(run_id: str) -> PathwayRun:
    with session_scope() as s:
        return s.get(PathwayRun, run_id)


def test_mpps_completed_with_every_listed_image_makes_the_study_ready_at_once(scp, registry, chest):
    study, files, study_uid, accession, uids = chest
    run_id = _order(study, registry)
    modality = Modality(scp.port)
    assert modality.create("1.2.826.0.1.3680043.8.498.1", study_uid=study_uid, accession=accession) == 0x0000
    last = _store(scp.port, files)
    assert sweep_readiness(now=last + dt.timedelta(seconds=1), registry=registry) == []
    assert _run(run_id).status_reason == "quiet for 1 s of 60 s; MPPS in progress"

    assert modality.set("1.2.826.0.1.3680043.8.498.1", "COMPLETED", uids) == 0x0000
    assert len(scp.ended) == 2  # serve's sweep is woken: the storing association's release, the MPPS completion
    (ready,) = sweep_readiness(now=last + dt.timedelta(seconds=1), registry=registry)
    assert ready.run_ids == (run_id,) and not ready.forced
    assert _run(run_id).status == "ready"
    assert _run(run_id).status_reason == (
        f"MPPS completed and all {len(uids)} listed instances received and the expected series is present")
    with session_scope() as s:
        actions = [e.action for e in s.exec(select(AuditEvent).where(AuditEvent.entity_type == "performed_procedure_step"))]
        (step,) = s.exec(select(PerformedProcedureStep)).all()
        stored = repr(step.model_dump())
    assert actions == ["mpps.created", "mpps.completed"]
    assert step.status == "COMPLETED" and len(step.instance_uids) == len(uids) and step.accession_number == accession
    assert "MPPSPATIENT" not in stored and "MPPS-MRN-1" not in stored  # no patient attribute kept


def test_an_mpps_listing_images_not_yet_here_waits_then_falls_back_to_the_quiet_period(scp, registry, chest):
    study, files, study_uid, accession, uids = chest
    run_id = _order(study, registry)
    modality = Modality(scp.port)
    assert modality.create("1.2.826.0.1.3680043.8.498.2", study_uid=study_uid, accession=accession) == 0x0000
    missing = ["1.2.826.0.1.3680043.8.498.2.1", "1.2.826.0.1.3680043.8.498.2.2"]
    assert modality.set("1.2.826.0.1.3680043.8.498.2", "COMPLETED", [*uids, *missing]) == 0x0000
    last = _store(scp.port, files)
    assert sweep_readiness(now=last + dt.timedelta(seconds=1), registry=registry) == []
    assert _run(run_id).status_reason == (
        f"quiet for 1 s of 60 s; MPPS completed, {len(uids)} of {len(uids) + 2} listed instances received")
    (ready,) = sweep_readiness(now=last + dt.timedelta(seconds=61), registry=registry)
    assert _run(run_id).status_reason == "quiet period passed and the expected series is present"


def test_a_discontinued_step_leaves_the_quiet_period_in_force(scp, registry, chest):
    study, files, study_uid, accession, uids = chest
    run_id = _order(study, registry)
    modality = Modality(scp.port)
    assert modality.create("1.2.826.0.1.3680043.8.498.3", study_uid=study_uid, accession=accession) == 0x0000
    assert modality.set("1.2.826.0.1.3680043.8.498.3", "DISCONTINUED", uids) == 0x0000
    last = _store(scp.port, files)
    assert sweep_readiness(now=last + dt.timedelta(seconds=1), registry=registry) == []
    assert _run(run_id).status_reason == "quiet for 1 s of 60 s"


def test_mpps_messages_the_standard_refuses_get_its_statuses(scp, chest):
    """PS3.4 F.7.2 and PS3.7 Annex C: 0x0106 a new step not IN PROGRESS, 0x0120 no Study
    Instance UID, 0x0111 a duplicate step, 0x0112 an N-SET of an unknown step, 0x0110 an N-SET
    of a step already completed; the node keeps serving."""
    _, _, study_uid, accession, uids = chest
    modality = Modality(scp.port)
    assert modality.create("1.2.826.0.1.3680043.8.498.9", study_uid=study_uid, accession=accession, status="COMPLETED") == 0x0106
    assert modality.create("1.2.826.0.1.3680043.8.498.9", study_uid="", accession=accession) == 0x0120
    assert modality.create("1.2.826.0.1.3680043.8.498.9", study_uid=study_uid, accession=accession) == 0x0000
    assert modality.create("1.2.826.0.1.3680043.8.498.9", study_uid=study_uid, accession=accession) == 0x0111
    assert modality.set("1.2.826.0.1.3680043.8.498.404", "COMPLETED", uids) == 0x0112
    assert modality.set("1.2.826.0.1.3680043.8.498.9", "COMPLETED", uids) == 0x0000
    assert modality.set("1.2.826.0.1.3680043.8.498.9", "DISCONTINUED", uids) == 0x0110
    assert modality.set("1.2.826.0.1.3680043.8.498.9", "FINISHED", uids) == 0x0110
    with session_scope() as s:
        (step,) = s.exec(select(PerformedProcedureStep)).all()
    assert step.status == "COMPLETED"


def test_the_ris_reporting_the_exam_completed_shortens_the_quiet_period(scp, registry, chest):
    """Through the HL7 intake: an SC with ORC-5 CM after the images makes the study ready after
    the spec's `completed_quiet_seconds` (5 s) of silence, not the 60 s quiet period; it says the
    exam ended, not how many images, so some silence after both is still required."""
    study, files, _, _, _ = chest
    run_id = _order(study, registry)
    last = _store(scp.port, files)
    assert sweep_readiness(now=last + dt.timedelta(seconds=6), registry=registry) == []
    assert _run(run_id).status_reason == "quiet for 6 s of 60 s"
    receive(exam_completed(Path(study.order_path).read_text(), "RIS-CM-1"), registry)
    with session_scope() as s:
        completed_at = s.exec(select(Order.exam_completed_at)).one()
        assert [e.action for e in s.exec(select(AuditEvent).where(AuditEvent.action == "order.exam-completed"))] == [
            "order.exam-completed"]
    due = []
    assert sweep_readiness(now=completed_at + dt.timedelta(seconds=2), registry=registry, on_due=due.append) == []
    assert _run(run_id).status_reason.endswith("; the RIS reported the exam completed")
    assert due == [pytest.approx(3.0)]  # serve looks again then, not at its next 5 s tick
    (ready,) = sweep_readiness(now=completed_at + dt.timedelta(seconds=5), registry=registry)
    assert ready.run_ids == (run_id,)
    assert _run(run_id).status_reason == (
        "the RIS reported the exam completed and no image came for 5 s and the expected series is present")
    receive(exam_completed(Path(study.order_path).read_text(), "RIS-CM-2"), registry)  # a repeat changes nothing
    with session_scope() as s:
        assert s.exec(select(Order.exam_completed_at)).one() == completed_at
