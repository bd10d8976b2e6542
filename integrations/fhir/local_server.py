"""Start and stop a local FHIR R4 server on loopback, for tests and `radpath demo`.

The server is SEKMET (PyPI `sekmet-fhir`, Apache-2.0): a FHIR R4 server with transactions,
conditional create/update, search by identifier, a SMART Backend Services token endpoint
and Subscriptions. `scripts/install-fhir-test-tools.sh` installs it into its own virtualenv
under `.cache/fhir-server`, apart from radpath's environment. Its order simulator is turned
off so that it only stores what radpath sends.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = PROJECT_ROOT / "scripts" / "install-fhir-test-tools.sh"
SERVER_VENV = PROJECT_ROOT / ".cache" / "fhir-server"
SERVER_EXE = SERVER_VENV / "bin" / "sekmet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> Path:
    """Install the server (and the FHIR JSON schema) when missing; return the executable."""
    if not SERVER_EXE.exists():
        env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=600, env=env)
    return SERVER_EXE


@dataclass
class LocalFhirServer:
    """A running server: `base_url` ends in /fhir; `token_url` is its SMART token endpoint."""

    base_url: str
    token_url: str
    process: subprocess.Popen
    workdir: Path
    log_path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> LocalFhirServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_fhir_server(
    workdir: Path,
    *,
    port: int | None = None,
    smart_clients: list[dict[str, Any]] | None = None,
    bearer_tokens: list[str] | None = None,
    startup_timeout_s: float = 60.0,
) -> LocalFhirServer:
    """Start the server on 127.0.0.1 with its store under `workdir`; wait until it answers.

    With `smart_clients` (e.g. `{"client_id": ..., "public_key_path": ..., "scopes": ...}`)
    or `bearer_tokens` the server demands authentication; otherwise it accepts anyone.
    """
    exe = ensure_installed()
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    base_url = f"http://127.0.0.1:{port}/fhir"
    types = [t for t, on in (("smart", smart_clients), ("bearer", bearer_tokens)) if on] or ["none"]
    settings = {
        "base_url": base_url,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(workdir / "data"),
        "own_private_key_path": str(workdir / "keys" / "server.pem"),
        "simulator": {"enabled": False},
        "validation": {"inbound": "strict"},
        "log_inbound": False,
        "server_auth": {
            "types": types,
            "tokens": bearer_tokens or [],
            "smart_clients": smart_clients or [],
            "token_lifetime": 300,
        },
    }
    config = workdir / "settings.yaml"
    config.write_text(json.dumps(settings))  # JSON is YAML
    log_path = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEKMET_", "VIRTUAL_ENV"))}
    env["SEKMET_CONFIG"] = str(config)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(exe), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = LocalFhirServer(base_url, f"http://127.0.0.1:{port}/auth/token", process, workdir, log_path, settings)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"FHIR server exited at start (code {process.returncode}); see {log_path}")
        try:
            if httpx.get(f"{base_url}/metadata", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"FHIR server did not answer within {startup_timeout_s:.0f} s; see {log_path}")
