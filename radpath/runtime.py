"""Process set-up shared by the CLI commands: settings, ledger schema, Prefect defaults."""

from __future__ import annotations

import os

from integrations.settings import get_settings


def configure_prefect() -> None:
    """Embedded defaults: without PREFECT_API_URL, Prefect runs an ephemeral API whose
    database and result storage live inside radpath's data directory.

    Must run before Prefect is imported (it reads some settings at import).
    """
    settings = get_settings()
    prefect_home = (settings.data_dir / "prefect").resolve()
    prefect_home.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(prefect_home))
        os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(prefect_home / "results"))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def prepare_ledger() -> None:
    from integrations.db.engine import migrate

    migrate()
