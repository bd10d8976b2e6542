"""The local Prefect server and UI (`radpath ui`, and `radpath serve` without PREFECT_API_URL),
with its database in radpath's data directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from integrations.settings import get_settings


def prefect_home() -> Path:
    """Where the local Prefect server keeps its database: <data dir>/prefect (as `configure_prefect`)."""
    home = (get_settings().data_dir / "prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def api_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/api"


def server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def server_env(host: str, port: int) -> dict[str, str]:
    """The server's environment: radpath's Prefect home, no client API URL of its own (the
    UI then talks to this server), the UI's address for alert links, basic auth where
    RADPATH_UI_AUTH is set, no analytics, and a database vacuum of old runs and events."""
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "PREFECT_UI_API_URL"}}
    env["PREFECT_HOME"] = str(prefect_home())
    env["PREFECT_UI_API_URL"] = api_url(host, port)
    # Where alerts link runs to (automations' `ui_url`); behind a reverse proxy, set the address
    # users reach the UI at.
    env.setdefault("PREFECT_UI_URL", f"http://{host}:{port}")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # Prefect's database vacuum: events (Prefect's default) and finished flow runs past retention.
    env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] = "events,flow_runs"
    env["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] = str(get_settings().prefect_retention_days * 86400)
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    auth = get_settings().ui_auth
    if auth is not None:  # the UI asks for it; the API answers 401 without it (health probes excepted)
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth.get_secret_value()
    return env


def server_answers(host: str, port: int) -> bool:
    """A Prefect server already answers there."""
    try:
        return httpx.get(f"{api_url(host, port)}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(host: str, port: int, log_path: Path, timeout: float = 120.0,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the local Prefect server (API, UI and its services: triggers, automations,
    scheduler) in its own process group and wait until it answers; returns the process.
    `extra_env`: e.g. PREFECT_SERVER_DATABASE_CONNECTION_URL for PostgreSQL."""
    log = log_path.open("ab")
    proc = subprocess.Popen(server_command(host, port), env={**server_env(host, port), **(extra_env or {})}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {proc.returncode}; see {log_path}")
        if server_answers(host, port):
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; see {log_path}")
        time.sleep(0.5)
