"""`radpath serve` started as an operator starts it, for end-to-end tests: a separate
process, free ports, its own data dir, and (without PREFECT_API_URL) its own Prefect server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The served process's pseudonym key (the served_ledger fixture gives the test process the same).
SERVE_PSEUDONYM_KEY = "serve-test"
ROOT = Path(__file__).resolve().parents[1]


def stop_process(proc: subprocess.Popen, timeout: float, *, group: bool = True) -> bool:
    """SIGTERM to the process group (or to the process alone), then SIGKILL to the group after
    `timeout` seconds. True when it stopped on SIGTERM."""
    if proc.poll() is not None:
        return True
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    data_dir: Path
    mllp_port: int
    dicom_port: int
    http_port: int
    prefect_port: int
    log: Path

    prefect_api_url: str | None = None  # a server not started by serve

    @property
    def prefect_api(self) -> str:
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def radpath_serve(tmp_path: Path, extra_env: dict[str, str] | None = None, start_timeout: float = 240,
                  prefect_api: str | None = None):
    """Yield a Served once `radpath serve` wrote its ready file; SIGTERM and check a clean exit after.

    Without `prefect_api`, serve starts its own Prefect server (the embedded default)."""
    served = Served(tmp_path / "data", free_port(), free_port(), free_port(), free_port(), tmp_path / "serve.log", prefect_api)
    env = {
        **os.environ,
        "RADPATH_DATA_DIR": str(served.data_dir),
        "RADPATH_MLLP_PORT": str(served.mllp_port),
        "RADPATH_DICOM_PORT": str(served.dicom_port),
        "RADPATH_HTTP_PORT": str(served.http_port),
        "RADPATH_PREFECT_PORT": str(served.prefect_port),
        "RADPATH_DICOM_QUIET_PERIOD_SECONDS": json.dumps({"CT": 0}),
        "RADPATH_PSEUDONYM_KEY": SERVE_PSEUDONYM_KEY,
        **(extra_env or {}),
    }
    env.pop("PREFECT_API_URL", None)
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    ready = tmp_path / "ready"
    with served.log.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "radpath.cli", "serve", "--ready-file", str(ready)], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + start_timeout
            while not ready.exists():
                assert proc.poll() is None, served.log_tail()
                assert time.monotonic() < deadline, "radpath serve did not start"
                time.sleep(0.5)
            yield served
        finally:  # SIGTERM to serve alone: its runners stop their flow-run processes themselves
            if not stop_process(proc, 60, group=False):
                raise AssertionError(f"radpath serve did not stop on SIGTERM\n{served.log_tail()}")
    assert proc.returncode == 0, served.log_tail()
