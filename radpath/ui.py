"""`radpath ui`: a local Prefect server and UI whose database lives in radpath's data directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
    UI then talks to this server), no analytics."""
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "PREFECT_UI_API_URL"}}
    env["PREFECT_HOME"] = str(prefect_home())
    env["PREFECT_UI_API_URL"] = api_url(host, port)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return env
