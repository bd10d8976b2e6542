"""Ledger migrations on PostgreSQL: `radpath db upgrade` on an empty database goes to every
head, `alembic downgrade base` removes every ledger table, and the way up works again. The
upgraded schema is the one the models describe (Alembic's autogenerate comparison is empty)."""

from __future__ import annotations

import os
import subprocess
import sys
from uuid import uuid4

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, pool
from sqlmodel import SQLModel

import integrations.db.models  # noqa: F401  (registers the tables)
from integrations.db.engine import alembic_config

LEDGER_TABLES = {t.name for t in SQLModel.metadata.sorted_tables}


def _radpath_db_upgrade(url: str, tmp_path) -> None:
    env = {**os.environ, "RADPATH_DATABASE_URL": url, "RADPATH_DATA_DIR": str(tmp_path / "data"),
           "RADPATH_PSEUDONYM_KEY": "test-secret"}
    run = subprocess.run([sys.executable, "-m", "radpath.cli", "db", "upgrade"], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def _state(url: str) -> tuple[set[str], set[str], list]:
    """(tables, alembic revisions, schema differences from the models)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            revisions = set(context.get_current_heads())
            diffs = compare_metadata(context, SQLModel.metadata) if revisions else []
        return tables, revisions, diffs
    finally:
        engine.dispose()


def test_migrations_go_up_down_to_base_and_up_again(postgres, tmp_path):
    database = f"m{uuid4().hex[:12]}"
    postgres.create_database(database)
    url = postgres.url(database)
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())

    _radpath_db_upgrade(url, tmp_path)
    tables, revisions, diffs = _state(url)
    assert LEDGER_TABLES <= tables and revisions == heads
    assert diffs == []

    command.downgrade(alembic_config(url), "base")
    tables, revisions, _ = _state(url)
    assert tables & LEDGER_TABLES == set() and revisions == set()

    _radpath_db_upgrade(url, tmp_path)
    tables, revisions, diffs = _state(url)
    assert LEDGER_TABLES <= tables and revisions == heads
    assert diffs == []
