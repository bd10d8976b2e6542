"""`radpath serve` as an operator runs it: a separate process, real sockets, and (without
PREFECT_API_URL) its own local Prefect server.

An order goes in over MLLP, the images over C-STORE; the readiness sweep emits
`radpath.run.ready`, the pathway deployment's trigger creates the flow run, the served
runner executes it and the results are delivered; SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlmodel import func, select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Delivery, Instance, PathwayRun, Result
from integrations.dicom.scu import push_folder
from integrations.hl7.client import send_messages
from integrations.hl7.orders import parse_order
from tests.phi_scan import assert_prefect_holds_none, identity_forms, linkable_values
from tests.hl7_fixtures import exam_completed
from tests.modality import Modality
from tests.served import radpath_serve

pytestmark = pytest.mark.slow


def wait_for_run(predicate, timeout: float, served) -> tuple[PathwayRun, list[Delivery]]:  # noqa: ANN001
    """Poll the served ledger (see the `served_ledger` fixture) until predicate(run, deliveries) holds."""
    from integrations.db.engine import session_scope

    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as s:
            run = s.exec(select(PathwayRun)).first()
            deliveries = s.exec(select(Delivery)).all()
        if run is not None and predicate(run, deliveries):
            return run, deliveries
        assert time.monotonic() < deadline, f"run {run.status if run else 'absent'}\n{served.log_tail()}"
        time.sleep(1)


def _info_logs_of(prefect_api: str, flow_run_id: str, prefix: str, timeout: float = 30) -> list[str]:
    """The flow run's INFO-or-above log messages starting with `prefix`, once any has arrived
    (the API log handler sends in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = httpx.post(f"{prefect_api}/logs/filter", timeout=10,
                          json={"logs": {"flow_run_id": {"any_": [flow_run_id]}, "level": {"ge_": 20}}}).json()
        found = [entry["message"] for entry in logs if entry["message"].startswith(prefix)]
        if found or time.monotonic() > deadline:
            return found or [entry["message"] for entry in logs]
        time.sleep(1)


def send_cardiac_ct(tmp_path: Path, served, *, mpps: bool = False):  # noqa: ANN001, ANN201 - the GeneratedStudy sent
    """The order over MLLP, then the images over C-STORE; with `mpps`, framed by the modality's
    MPPS N-CREATE (IN PROGRESS) and N-SET (COMPLETED, listing every instance)."""
    from radpath.synth import generate

    (study,) = generate("cardiac-ct", 1, 5, tmp_path / "synthetic")  # the quickest pathway to run
    acks = send_messages("127.0.0.1", served.mllp_port, [Path(study.order_path).read_bytes().decode()])
    assert [a.code for a in acks] == ["AA"]
    modality, step = Modality(served.dicom_port, ae_title="RADPATH_DEMO"), "1.2.826.0.1.3680043.8.498.77"
    if mpps:
        assert modality.create(step, study_uid=study.study_uid, accession=study.accession_number) == 0x0000
    report = push_folder(study.dicom_dir, "127.0.0.1", served.dicom_port)
    assert report.failed == 0 and report.ok > 0
    if mpps:
        uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in Path(study.dicom_dir).rglob("*.dcm")]
        assert modality.set(step, "COMPLETED", uids) == 0x0000
    return study


def test_serve_takes_an_order_and_a_study_to_delivered_results(tmp_path, served_ledger, monkeypatch):
    from typer.testing import CliRunner

    from radpath import cli

    # A quiet period far longer than the test: only the modality's MPPS can make the study ready
    with radpath_serve(tmp_path, {"RADPATH_DICOM_QUIET_PERIOD_SECONDS": '{"CT": 600}'}) as served:
        served_ledger(served.data_dir)
        study = send_cardiac_ct(tmp_path, served, mpps=True)
        run, deliveries = wait_for_run(lambda r, d: r.status in {"completed", "failed"} and d, 300, served)
        assert run.status == "completed" and run.pathway == "heart-failure-cardiac-ct"
        # Ready on the modality's MPPS, seconds after the last image, not after the quiet period
        with session_scope() as session:
            (ready,) = session.exec(select(AuditEvent).where(AuditEvent.action == "study.ready")).all()
            last_image = session.exec(select(func.max(Instance.received_at))).one()
        assert ready.detail["reason"].startswith("MPPS completed and all"), ready.detail
        assert (ready.at - last_image).total_seconds() <= 5.0
        assert sorted(d.destination for d in deliveries) == ["ehr", "pacs", "ris"]
        assert all(d.status == "delivered" for d in deliveries)
        # The run was a deployment's flow run, created by the trigger on radpath.run.ready
        flow_run = httpx.get(f"{served.prefect_api}/flow_runs/{run.flow_run_id}", timeout=10).json()
        deployment = httpx.get(f"{served.prefect_api}/deployments/{flow_run['deployment_id']}", timeout=10).json()
        assert deployment["name"] == "heart-failure-cardiac-ct-urgent"  # the synthetic order's ORC-7 priority is S (stat)
        assert flow_run["state"]["name"] == "Delivered"
        assert {"pathway:heart-failure-cardiac-ct", "priority:urgent", "trust:demo-trust"} <= set(flow_run["tags"])
        assert any(t.startswith("study:S-") for t in flow_run["tags"])  # added by the flow: triggers cannot tag per run
        key = next(t for t in flow_run["tags"] if t.startswith("study:S-")).removeprefix("study:")
        with session_scope() as session:
            urgent = session.exec(select(Result.urgent)).one()
        assert ("finding:urgent" in flow_run["tags"]) == urgent  # the finding's urgency, beside the order's priority
        recorded = _info_logs_of(served.prefect_api, run.flow_run_id, "result recorded")  # INFO, in the run's Logs tab
        assert len(recorded) == 1 and "3 delivered" in recorded[0]

        # From the exam's accession number (which Prefect never holds) to the run in the UI
        monkeypatch.setattr(cli.console, "width", 300)
        monkeypatch.setenv("PREFECT_UI_URL", served.prefect_api.removesuffix("/api"))
        found = CliRunner().invoke(cli.app, ["runs", "find", "--accession", study.accession_number])
        assert found.exit_code == 0, found.output
        assert f"{served.prefect_api.removesuffix('/api')}/runs/flow-run/{run.flow_run_id}" in found.output
        assert key in found.output and study.accession_number not in found.output
        assert CliRunner().invoke(cli.app, ["runs", "find", "--accession", "NOT-AN-EXAM"]).exit_code == 1

        # What the served Prefect stored for the whole journey (events from every front door,
        # runs, logs, artifacts, results) holds no identifier, accession or DICOM UID.
        order = parse_order(Path(study.order_path).read_text())
        assert_prefect_holds_none([served.data_dir / "prefect"], identity_forms(order),
                                  linkable_values(order.accession_number, study.study_uid), key)
        task_runs = httpx.post(f"{served.prefect_api}/task_runs/filter", timeout=10,
                               json={"task_runs": {"flow_run_id": {"any_": [run.flow_run_id]}}}).json()
        assert sorted(t["name"] for t in task_runs if t["name"].startswith("deliver-")) == sorted(
            f"deliver-{d.kind}:{d.destination}/{key}" for d in deliveries)  # ops see where and which study


def test_serve_makes_a_study_ready_when_the_ris_reports_the_exam_completed(tmp_path, served_ledger):
    """The RIS's ORM SC with ORC-5 CM over MLLP, after the images: ready the spec's 5 s
    `completed_quiet_seconds` later, though the quiet period (600 s here) is far from over."""
    from radpath.synth import generate

    (study,) = generate("cardiac-ct", 1, 7, tmp_path / "synthetic")
    with radpath_serve(tmp_path, {"RADPATH_DICOM_QUIET_PERIOD_SECONDS": '{"CT": 600}'}) as served:
        served_ledger(served.data_dir)
        order = Path(study.order_path).read_text()
        assert [a.code for a in send_messages("127.0.0.1", served.mllp_port, [order])] == ["AA"]
        assert push_folder(study.dicom_dir, "127.0.0.1", served.dicom_port).failed == 0
        completed = exam_completed(order, "RIS-CM-SERVE")
        assert [a.code for a in send_messages("127.0.0.1", served.mllp_port, [completed])] == ["AA"]
        run, _ = wait_for_run(lambda r, d: r.status != "waiting", 60, served)
        with session_scope() as session:
            (ready,) = session.exec(select(AuditEvent).where(AuditEvent.action == "study.ready")).all()
            (noted,) = session.exec(select(AuditEvent).where(AuditEvent.action == "order.exam-completed")).all()
            last_image = session.exec(select(func.max(Instance.received_at))).one()
        assert ready.detail["reason"].startswith("the RIS reported the exam completed"), ready.detail
        waited = (ready.at - max(noted.at, last_image)).total_seconds()
        assert 5.0 <= waited <= 7.0, waited


def test_urgent_runs_have_their_own_lane_and_do_not_wait_behind_routine_ones(tmp_path, served_ledger):
    """With one routine slot, four routine runs go one after the other. An urgent order sent
    once they are all queued starts in the urgent queue's runner before the last routine run
    does. (One runner for all, taking runs in order of scheduled time, would start it last.)"""
    from integrations.db.engine import session_scope
    from integrations.db.models import Order
    from radpath.synth import generate

    def send(study, priority: str) -> None:  # noqa: ANN001
        text = re.sub(r"\^\^[RAS]\|", f"^^{priority}|", Path(study.order_path).read_bytes().decode())  # ORC-7, OBR-27
        assert [a.code for a in send_messages("127.0.0.1", served.mllp_port, [text])] == ["AA"]
        assert push_folder(study.dicom_dir, "127.0.0.1", served.dicom_port).failed == 0

    def runs_when(predicate, timeout: float) -> list:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while True:
            with session_scope() as s:
                rows = s.exec(select(PathwayRun, Order).join(Order, Order.id == PathwayRun.order_id)).all()
            if predicate(rows):
                return rows
            assert time.monotonic() < deadline, f"{[(r.status, o.priority) for r, o in rows]}\n{served.log_tail()}"
            time.sleep(0.5)

    *routine_studies, urgent_study = generate("cardiac-ct", 5, 11, tmp_path / "synthetic")
    env = {"RADPATH_RUNNER_LIMIT": "1", "RADPATH_URGENT_RUNNER_LIMIT": "1"}
    with radpath_serve(tmp_path, extra_env=env) as served:
        served_ledger(served.data_dir)
        for study in routine_studies:
            send(study, "R")
        runs_when(lambda rows: len(rows) == 4 and all(r.status != "waiting" for r, _ in rows), 120)
        time.sleep(2)  # the triggers have created the four routine flow runs
        send(urgent_study, "S")
        rows = runs_when(lambda rows: len(rows) == 5 and all(r.status in {"completed", "failed"} for r, _ in rows), 600)
        assert all(run.status == "completed" for run, _ in rows), served.log_tail()
        routine = sorted((run for run, order in rows if order.priority == "routine"), key=lambda r: r.started_at)
        (urgent,) = [run for run, order in rows if order.priority == "stat"]
        assert all(a.finished_at <= b.started_at for a, b in zip(routine, routine[1:]))  # one routine slot
        assert urgent.started_at < routine[-1].started_at, [(r.started_at, r.finished_at) for r in (*routine, urgent)]
        for run, queue in [(urgent, "urgent"), *((r, "routine") for r in routine)]:
            flow_run = httpx.get(f"{served.prefect_api}/flow_runs/{run.flow_run_id}", timeout=10).json()
            deployment = httpx.get(f"{served.prefect_api}/deployments/{flow_run['deployment_id']}", timeout=10).json()
            assert deployment["name"] == f"heart-failure-cardiac-ct-{queue}"
