"""`radpath serve` as an operator runs it: a separate process, real sockets, embedded Prefect.

An order goes in over MLLP, the images over C-STORE; the service finds the study ready,
runs the pathway and delivers; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from integrations.db.engine import get_engine, session_scope
from integrations.db.models import Delivery, PathwayRun
from integrations.dicom.scu import push_folder
from integrations.hl7.client import send_messages
from integrations.settings import reset_settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_takes_an_order_and_a_study_to_delivered_results(tmp_path, monkeypatch):
    from radpath.synth import generate

    (study,) = generate("cardiac-ct", 1, 5, tmp_path / "synthetic")  # the quickest pathway to run
    data_dir = tmp_path / "data"
    ports = {"RADPATH_MLLP_PORT": _free_port(), "RADPATH_DICOM_PORT": _free_port(), "RADPATH_HTTP_PORT": _free_port()}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "RADPATH_DATA_DIR": str(data_dir),
        "RADPATH_DICOM_QUIET_PERIOD_SECONDS": json.dumps({"CT": 0}),
        "RADPATH_PSEUDONYM_KEY": "serve-test",
    }
    env.pop("PREFECT_API_URL", None)
    ready = tmp_path / "ready"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "radpath.cli", "serve", "--ready-file", str(ready)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "radpath serve did not start"
            time.sleep(0.5)
        acks = send_messages("127.0.0.1", ports["RADPATH_MLLP_PORT"], [Path(study.order_path).read_bytes().decode()])
        assert [a.code for a in acks] == ["AA"]
        report = push_folder(study.dicom_dir, "127.0.0.1", ports["RADPATH_DICOM_PORT"])
        assert report.failed == 0 and report.ok > 0

        monkeypatch.setenv("RADPATH_DATA_DIR", str(data_dir))
        reset_settings()
        get_engine.cache_clear()
        while True:
            with session_scope() as s:
                run = s.exec(select(PathwayRun)).one()
                deliveries = s.exec(select(Delivery)).all()
            if run.status in {"completed", "failed"} and deliveries:
                break
            assert time.monotonic() < deadline, f"run still {run.status}"
            time.sleep(1)
        assert run.status == "completed" and run.pathway == "heart-failure-cardiac-ct"
        assert sorted(d.destination for d in deliveries) == ["ehr", "pacs", "ris"]
        assert all(d.status == "delivered" for d in deliveries)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        get_engine().dispose()
        get_engine.cache_clear()
        reset_settings()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
