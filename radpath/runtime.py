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
    # Flow and task runs log INFO to the API (the run's Logs tab: what it found and sent, no
    # identifiers); the console stays at warnings.
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if settings.ui_auth is not None:  # the Prefect server radpath starts asks for it (radpath.ui.server_env)
        os.environ.setdefault("PREFECT_API_AUTH_STRING", settings.ui_auth.get_secret_value())


def prepare_ledger() -> None:
    """Create the data directory and bring the ledger schema up to date, or raise a
    ConfigurationError naming the setting that stops it."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    from integrations.db.engine import migrate
    from integrations.settings import ConfigurationError

    settings = get_settings()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / ".write-check").touch()
        (settings.data_dir / ".write-check").unlink()
    except OSError as exc:
        raise ConfigurationError(f"RADPATH_DATA_DIR={settings.data_dir}: cannot write there ({exc.strerror})") from None
    try:
        migrate()
    except (ArgumentError, OperationalError, ImportError, ValueError) as exc:
        # Name the URL's scheme and host only: the URL may hold a password.
        raise ConfigurationError(f"RADPATH_DATABASE_URL ({_url_shape(settings.resolved_database_url)}): the ledger "
                                 f"database cannot be opened ({type(exc).__name__})") from None


def _url_shape(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2].split('/')[0]}…" if rest else scheme
