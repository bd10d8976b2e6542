"""Test helper: a real KServe / Open Inference Protocol v2 server on loopback serving ONNX models.

The server is Seldon MLServer (PyPI `mlserver`, Apache-2.0), which
scripts/install-inference-server.sh installs with onnxruntime into its own virtualenv under
.cache/inference-server, apart from radpath's environment. It runs each model through the
custom runtime in tests/inference_runtime.py. The first test that needs it installs it;
without network that fails in CI and skips elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.served import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = ROOT / "scripts" / "install-inference-server.sh"
SERVER_VENV = ROOT / ".cache" / "inference-server"
MLSERVER = SERVER_VENV / "bin" / "mlserver"
TESTS_DIR = Path(__file__).resolve().parent  # where MLServer imports inference_runtime from


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _install() -> None:
    if MLSERVER.exists():
        return
    try:
        env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=600, capture_output=True, env=env)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"inference server could not be installed ({INSTALL_SCRIPT.name}): {exc}")
    if not MLSERVER.exists():
        _unavailable(f"inference server missing at {MLSERVER}")


def _write_repository(workdir: Path, models: dict[str, Path], http_port: int) -> None:
    """MLServer's settings.json plus one folder per model holding its model-settings.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": free_port(),  # gRPC cannot be turned off; keep it on a free loopback port
        "metrics_endpoint": None,  # no metrics server
        "gzip_enabled": False,  # gzipping a ~100 MB JSON response costs ~9 s of the 2-core budget
        "parallel_workers": 0,  # inference in the server process, no worker pool
        "environments_dir": str(workdir / ".envs"),
        "metrics_dir": str(workdir / ".metrics"),
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2))
    for name, onnx_path in models.items():
        folder = workdir / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        model_settings = {
            "name": name,
            "implementation": "inference_runtime.OnnxRuntime",
            "platform": "onnxruntime_onnx",
            "parameters": {"uri": str(Path(onnx_path).resolve())},
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


@contextmanager
def inference_server(workdir: Path, models: dict[str, Path], start_timeout: float = 120) -> Iterator[str]:
    """Serve `models` ({name: .onnx path}) with MLServer; yield its base URL "http://127.0.0.1:PORT".

    Every model is ready (GET /v2/models/{name}/ready) before the URL is yielded; the server
    gets SIGTERM (then SIGKILL) on exit. MLServer's log is workdir/mlserver.log."""
    _install()
    port = free_port()
    _write_repository(workdir, models, port)
    base_url = f"http://127.0.0.1:{port}"
    log = workdir / "mlserver.log"
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR)}
    env.pop("VIRTUAL_ENV", None)
    with log.open("w") as log_file:
        proc = subprocess.Popen([str(MLSERVER), "start", str(workdir)], cwd=workdir, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + start_timeout
            pending = ["/v2/health/ready", *(f"/v2/models/{name}/ready" for name in models)]
            with httpx.Client(base_url=base_url, timeout=5) as client:
                while pending:
                    assert proc.poll() is None, f"MLServer exited ({proc.returncode})\n{_log_tail(log)}"
                    assert time.monotonic() < deadline, f"MLServer not ready: {pending[0]}\n{_log_tail(log)}"
                    try:
                        if client.get(pending[0]).status_code == 200:
                            pending.pop(0)
                            continue
                    except httpx.TransportError:
                        pass
                    time.sleep(0.25)
            yield base_url
        finally:
            stop_process(proc, 30, group=False)
