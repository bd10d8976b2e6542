"""The ledger tests (tests/test_ledger.py), the same tests on PostgreSQL.

The module-level `radpath_env` below overrides conftest's for the tests imported here: the
same fresh data directory and migrated ledger, but in a fresh PostgreSQL database per test.
Other tests/test_postgres_<area>.py files import `radpath_env` from here. One test of its own
checks text with NUL characters, which PostgreSQL cannot store as such.
"""

from __future__ import annotations

from uuid import uuid4

import pytest

from integrations.db.engine import get_engine, migrate
from integrations.settings import get_settings, reset_settings
from tests.test_ledger import *


@pytest.fixture
def radpath_env(tmp_path, monkeypatch, postgres):
    """conftest's `radpath_env` with RADPATH_DATABASE_URL set to a new PostgreSQL database."""
    database = f"t{uuid4().hex[:12]}"
    postgres.create_database(database)
    monkeypatch.setenv("RADPATH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADPATH_DATABASE_URL", postgres.url(database))
    monkeypatch.setenv("RADPATH_PSEUDONYM_KEY", "test-secret")
    reset_settings()
    get_engine.cache_clear()
    migrate()
    settings = get_settings()
    assert get_engine().dialect.name == "postgresql"
    yield settings
    get_engine().dispose()
    get_engine.cache_clear()
    reset_settings()


def test_text_with_nul_characters_is_committed(radpath_env):
    """PostgreSQL text cannot hold U+0000 (SQLite can): the ledger stores U+FFFD instead of
    failing the commit (and every resend); JSON keeps the character escaped."""
    from io import BytesIO

    import pydicom
    from sqlmodel import select as select_rows

    from integrations.db.engine import session_scope
    from integrations.db.models import AuditEvent, Series
    from integrations.dicom.store import ingest_instances
    from tests.test_dicom_group_commit import _instances

    ds = pydicom.dcmread(BytesIO(_instances(1, 1)[0]))
    ds.SeriesDescription = "CHEST\x00AXIAL"
    buffer = BytesIO()
    ds.save_as(buffer)
    (stored,) = ingest_instances([buffer.getvalue()])
    assert stored.outcome == "stored"
    with session_scope() as session:
        ledger.audit(session, "test", "nul.check", "series", stored.series_uid, note="a\x00b")
    with session_scope() as session:
        series = session.exec(select_rows(Series).where(Series.series_uid == stored.series_uid)).one()
        event = session.exec(select_rows(AuditEvent).where(AuditEvent.action == "nul.check")).one()
    assert series.description == "CHEST\ufffdAXIAL"
    assert event.detail["note"] == "a\x00b"
