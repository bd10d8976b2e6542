"""Scale-out, as a trust would run it: PostgreSQL behind the ledger and behind the Prefect API,
the deployments registered by `radpath deploy` (prefect.yaml, `prefect deploy`) on the
`radpath` process work pool, a Prefect process worker running the flows, and `radpath serve`
with only its front doors (RADPATH_SERVE_DEPLOYMENTS=false).

An order over MLLP and a study over C-STORE become a flow run that the deployment's trigger
puts on the urgent queue and the worker runs; the results are delivered once, recorded in
the PostgreSQL ledger. Worker and front doors share the data directory (one host here; a
shared filesystem across hosts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from uuid import uuid4

import httpx
import pytest
from sqlmodel import select

from tests.served import ROOT, free_port, radpath_serve, stop_process

pytestmark = pytest.mark.slow


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc, 30)


def test_workers_on_the_work_pool_run_pathways_against_postgresql(postgres, tmp_path, monkeypatch):
    from integrations.db.engine import get_engine, session_scope
    from integrations.db.models import Delivery, PathwayRun
    from integrations.settings import reset_settings
    from radpath.ui import api_url, start_server
    from tests.test_serve import send_cardiac_ct

    ledger_db, prefect_db = f"ledger_{uuid4().hex[:8]}", f"prefect_{uuid4().hex[:8]}"
    postgres.create_database(ledger_db)
    postgres.create_database(prefect_db)
    port = free_port()
    monkeypatch.setenv("RADPATH_DATA_DIR", str(tmp_path / "data"))  # prefect_home() for the server
    reset_settings()
    server = start_server("127.0.0.1", port, tmp_path / "prefect-server.log",
                          extra_env={"PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.url(prefect_db, "asyncpg")})
    api = api_url("127.0.0.1", port)
    env = {**os.environ, "PREFECT_API_URL": api, "RADPATH_DATA_DIR": str(tmp_path / "data"),
           "RADPATH_DATABASE_URL": postgres.url(ledger_db), "RADPATH_PSEUDONYM_KEY": "scale-out-test", "RADPATH_HOME": str(ROOT)}
    worker = None
    try:
        deployed = subprocess.run([sys.executable, "-m", "radpath.cli", "deploy"], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        queues = httpx.post(f"{api}/work_pools/radpath/queues/filter", json={}, timeout=10).json()
        assert {q["name"]: q["priority"] for q in queues if q["name"] != "default"} == {"urgent": 1, "routine": 2}

        with (tmp_path / "worker.log").open("w") as log:
            worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "radpath", "--type",
                                       "process", "--limit", "2"], cwd=tmp_path, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        front_doors = {k: env[k] for k in ("RADPATH_DATABASE_URL", "RADPATH_PSEUDONYM_KEY")} | {"RADPATH_SERVE_DEPLOYMENTS": "false"}
        with radpath_serve(tmp_path, front_doors, prefect_api=api) as served:
            assert served.data_dir == tmp_path / "data"
            monkeypatch.setenv("RADPATH_DATABASE_URL", postgres.url(ledger_db))
            reset_settings()
            get_engine.cache_clear()
            send_cardiac_ct(tmp_path, served)
            deadline = time.monotonic() + 300
            while True:
                with session_scope() as s:
                    run = s.exec(select(PathwayRun)).first()
                    deliveries = s.exec(select(Delivery)).all()
                if run is not None and run.status in {"completed", "failed"} and deliveries:
                    break
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"{run.status if run else 'no run'}\n{(tmp_path / 'worker.log').read_text()[-3000:]}"
                time.sleep(1)
            assert run.status == "completed", (tmp_path / "worker.log").read_text()[-3000:]
            assert {d.destination: d.status for d in deliveries} == {"pacs": "delivered", "ris": "delivered", "ehr": "delivered"}
            flow_run = httpx.get(f"{api}/flow_runs/{run.flow_run_id}", timeout=10).json()
            deployment = httpx.get(f"{api}/deployments/{flow_run['deployment_id']}", timeout=10).json()
            assert (deployment["name"], flow_run["work_queue_name"]) == ("heart-failure-cardiac-ct-urgent", "urgent")
            assert flow_run["state"]["name"] == "Delivered"
        get_engine().dispose()
        get_engine.cache_clear()
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
        reset_settings()
