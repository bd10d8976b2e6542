"""The environment radpath starts its Prefect server with (`radpath serve`, `radpath ui`), read
back through Prefect's own settings model, as the server process reads it."""

from __future__ import annotations

import datetime as dt

from integrations.settings import reset_settings


def test_the_server_vacuums_finished_runs_after_the_retention_and_events_after_prefects_default(monkeypatch):
    from prefect.settings import Settings

    from radpath.ui import server_env

    monkeypatch.setenv("RADPATH_PREFECT_RETENTION_DAYS", "30")
    reset_settings()
    try:
        env = server_env("127.0.0.1", 4299)
    finally:
        monkeypatch.delenv("RADPATH_PREFECT_RETENTION_DAYS")
        reset_settings()
    for name in ("PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED", "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD",
                 "PREFECT_UI_URL", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, env[name])
    server = Settings().server
    assert server.services.db_vacuum.enabled == {"events", "flow_runs"}
    assert server.services.db_vacuum.retention_period == dt.timedelta(days=30)
    assert server.events.retention_period <= dt.timedelta(days=7)
    assert server.analytics_enabled is False
