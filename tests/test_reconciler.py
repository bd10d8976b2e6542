"""The reconciler: leases make each item one worker's; a killed run is finished exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlmodel import select

from integrations.db import ops
from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Delivery, PathwayRun
from integrations.dicom.store import ingest_instances
from integrations.settings import reset_settings
from tests.hl7_fixtures import receive
from tests.conftest import make_ready

ROOT = Path(__file__).resolve().parents[1]


def _ready_run(tmp_path: Path, registry, seed: int) -> str:
    from radpath.synth import generate

    (study,) = generate("cardiac-ct", 1, seed, tmp_path / "synthetic")
    raw = Path(study.order_path).read_text()
    receive(raw, registry)
    ingest_instances(f.read_bytes() for f in sorted(Path(study.dicom_dir).rglob("*.dcm")))
    (run_id,) = make_ready(study.study_uid)
    return run_id


def test_of_many_concurrent_claimants_exactly_one_wins_and_a_lapsed_lease_frees_the_run(radpath_env, registry, tmp_path):
    run_id = _ready_run(tmp_path, registry, seed=31)
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda i: ops.claim_run(run_id, f"reconciler-{i}", 60), range(8)))
    assert wins.count(True) == 1
    winner = f"reconciler-{wins.index(True)}"
    assert ops.runs_to_redrive(grace_seconds=0) == []  # claimed: nobody else lists it
    assert ops.claim_run(run_id, winner, 60)  # the holder may renew
    assert ops.claim_run(run_id, "late", 0.01) is False
    ops.release_run(run_id, winner)
    assert ops.claim_run(run_id, "short", 0.05)
    time.sleep(0.1)
    assert ops.claim_run(run_id, "after-lapse", 60)  # a dead holder's lease lapses


class SilentRis:
    """A TCP peer that accepts the MLLP connection and never answers (a hung RIS)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.server.settimeout(0.2)
        self.held: list[socket.socket] = []

    def accepted(self) -> bool:
        try:
            conn, _ = self.server.accept()
            self.held.append(conn)
        except TimeoutError:
            pass
        return bool(self.held)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.server.close()


@pytest.mark.slow
def test_a_run_killed_mid_delivery_is_finished_exactly_once(prefect_api, radpath_env, registry, tmp_path, monkeypatch):
    from flows.reconciler import reconciler

    run_id = _ready_run(tmp_path, registry, seed=32)
    ris = SilentRis()
    env = dict(os.environ, PREFECT_API_URL=prefect_api, RADPATH_RUN_LEASE_SECONDS="3", RADPATH_DELIVERY_LEASE_SECONDS="3",
               RADPATH_DESTINATIONS=json.dumps({"ris": {"kind": "mllp", "host": "127.0.0.1", "port": ris.port,
                                                        "ack_timeout_s": 120}}))
    code = f"import asyncio; from flows.dispatch import run_pathway; asyncio.run(run_pathway({run_id!r}))"
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ris.accepted():  # the flow has recorded its result and is sending to the RIS
            assert worker.poll() is None and time.monotonic() < deadline, "the pathway flow never reached the RIS"
        delivered_elsewhere = time.monotonic() + 30
        while {d.destination for d in _rows() if d.status == "delivered"} != {"pacs", "ehr"}:
            assert time.monotonic() < delivered_elsewhere
            time.sleep(0.2)
        os.killpg(worker.pid, signal.SIGKILL)  # the process dies mid-delivery: no hook, no state
        worker.wait()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        ris.close()

    with session_scope() as s:
        assert s.get(PathwayRun, run_id).status == "running"  # what the ledger knows of the dead run
    assert {d.destination: d.status for d in _rows()}["ris"] == "pending"

    monkeypatch.setenv("RADPATH_RUN_LEASE_SECONDS", "3")
    reset_settings()  # the RIS now reached as a file drop (the trust fixed its link)
    time.sleep(3.2)  # the dead process's leases lapse
    state = asyncio.run(reconciler(grace_seconds=0, return_state=True))
    assert state.name == "Reconciled" and "1 runs re-driven" in state.message, state.message

    rows = {d.destination: d for d in _rows()}
    assert all(r.status == "delivered" and r.attempts == 1 for r in rows.values()), {d: (r.status, r.attempts) for d, r in rows.items()}
    assert len(list((radpath_env.outbox_dir / "ris").iterdir())) == 1
    with session_scope() as s:
        assert s.get(PathwayRun, run_id).status == "completed"
        redrives = s.exec(select(AuditEvent).where(AuditEvent.action == "run.redriven")).all()
    assert len(redrives) == 1

    again = asyncio.run(reconciler(grace_seconds=0, return_state=True))  # nothing left: nothing done
    assert "0 runs re-driven" in again.message and "0 deliveries sent" in again.message
    assert [(r.id, r.attempts) for r in _rows()] == [(r.id, r.attempts) for r in rows.values()]


def _rows() -> list[Delivery]:
    with session_scope() as s:
        return list(s.exec(select(Delivery).order_by(Delivery.destination)).all())
