"""Shared fixtures: an isolated radpath data directory and ledger per test, tool checks."""

from __future__ import annotations

import os
import shutil

import pytest

from integrations.db.engine import get_engine, migrate
from integrations.settings import get_settings, reset_settings
from pathways.registry import default_registry


def require_tool(name: str) -> str:
    """Path of an external tool. Missing: a failure in CI (CI=true), a skip elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (make test installs it: scripts/install-system-deps.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def radpath_env(tmp_path, monkeypatch):
    """A fresh data directory and migrated SQLite ledger for one test."""
    monkeypatch.setenv("RADPATH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RADPATH_DATABASE_URL", raising=False)
    monkeypatch.setenv("RADPATH_PSEUDONYM_KEY", "test-secret")
    reset_settings()
    get_engine.cache_clear()
    migrate()
    yield get_settings()
    get_engine().dispose()
    get_engine.cache_clear()
    reset_settings()


@pytest.fixture
def registry():
    return default_registry()
