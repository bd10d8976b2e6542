"""Ledger engine, sessions and in-place schema upgrades (Alembic)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, event
from sqlmodel import Session, create_engine

from integrations.settings import get_settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
INDEX_LOCK = threading.Lock()  # one image-index writer per process (store and readiness): SQLite serialises writers anyway


@functools.lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    """One engine per database URL per process."""
    settings = get_settings()
    url = url or settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "postgresql":
            event.listen(engine, "before_cursor_execute", _postgres_text, retval=True)
    return engine


def _postgres_text(_conn, _cursor, statement, parameters, _context, _executemany):  # noqa: ANN001, ANN202
    # PostgreSQL text cannot hold U+0000 (SQLite can): one NUL in a DICOM description or a
    # FHIR string would fail the commit, and every resend with it. Store U+FFFD instead; the
    # exact bytes stay in the image store (and quarantine keeps raw HL7 as bytes).
    return statement, _without_nul(parameters)


# PostgreSQL (Appendix A): serialization_failure, deadlock_detected. The transaction was rolled
# back because of another one; running it again is the documented answer.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def concurrent_write_conflict(exc: BaseException) -> bool:
    """A commit lost to a concurrent writer: a unique key taken first, or a PostgreSQL
    deadlock or serialization failure. Retrying the unit of work is safe."""
    from sqlalchemy.exc import IntegrityError

    return isinstance(exc, IntegrityError) or getattr(getattr(exc, "orig", None), "sqlstate", None) in RETRY_SQLSTATES


def _without_nul(value):  # noqa: ANN001, ANN202
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {key: _without_nul(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_without_nul(item) for item in value)
    return value


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    # WAL for concurrent readers; synchronous=FULL so a commit survives power loss
    # (commit-before-acknowledge depends on it); foreign keys on.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str | None = None):  # noqa: ANN201
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().resolved_database_url).replace("%", "%%"))
    return cfg


def migrate(url: str | None = None) -> None:
    """Bring the ledger schema to the newest revision (a trust upgrades in place)."""
    from alembic import command

    engine = get_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "heads")


def reset_engines() -> None:
    """Dispose cached engines (tests switch databases)."""
    for engine in list(_cached_engines()):
        engine.dispose()
    get_engine.cache_clear()


def _cached_engines() -> Iterator[Engine]:
    # lru_cache keeps no public view of its values; rebuild from the current URL only.
    try:
        yield get_engine()
    except Exception:  # noqa: BLE001 - nothing to dispose
        return
