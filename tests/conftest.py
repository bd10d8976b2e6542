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


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the session (tests/postgres.py); tests create
    their own databases in it."""
    from tests.postgres import postgres_cluster

    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def served_ledger(monkeypatch):
    """Point this test process's ledger and pseudonyms at a data dir another process (`radpath
    serve`) owns."""

    from tests.served import SERVE_PSEUDONYM_KEY

    def use(data_dir) -> None:  # noqa: ANN001
        monkeypatch.setenv("RADPATH_DATA_DIR", str(data_dir))
        monkeypatch.setenv("RADPATH_PSEUDONYM_KEY", SERVE_PSEUDONYM_KEY)  # the same study keys as the served process
        reset_settings()
        get_engine.cache_clear()

    yield use
    get_engine().dispose()
    get_engine.cache_clear()
    reset_settings()


@pytest.fixture
def registry():
    return default_registry()


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real, temporary Prefect API (Prefect's own test harness) for a module's flow tests, with
    result storage of its own (not ~/.prefect/storage, shared by every session); yields its URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("prefect-results")}):
        yield PREFECT_API_URL.value()


def prefect_events(api_url: str, name: str, timeout: float = 30) -> list[dict]:
    """The events named `name` the Prefect API holds, once any has been persisted (waits up to
    `timeout` s: the events worker and the server's persister both batch)."""
    import time

    import httpx
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        page = httpx.post(f"{api_url}/events/filter", timeout=10,
                          json={"filter": {"event": {"name": [name]}, "occurred": {"since": "2000-01-01T00:00:00Z"}},
                                "limit": 50}).json()
        if page.get("events") or time.monotonic() > deadline:
            return page.get("events", [])
        time.sleep(0.5)


def dciodvfy_errors(path) -> list[str]:  # noqa: ANN001
    """The "Error" lines dicom3tools' dciodvfy reports for a DICOM file, and any warning about a
    Coding Scheme Designator (radpath writes no private coding scheme into DICOM; other
    warnings allowed)."""
    import subprocess

    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines()
            if "Error" in line or "Coding Scheme Designator" in line]


def ingest_synthetic_study(tmp_path, registry, kind: str, seed: int):  # noqa: ANN001, ANN201
    """One synthetic study: its order through the HL7 intake, its images into the store, made ready.

    Returns (GeneratedStudy, pathway run id)."""
    from pathlib import Path

    from integrations.dicom.store import ingest_instances
    from radpath.synth import generate
    from tests.hl7_fixtures import receive

    (study,) = generate(kind, 1, seed, tmp_path / "synthetic")
    raw = Path(study.order_path).read_bytes().decode()
    receive(raw, registry)  # through the HL7 intake, as the MLLP listener does
    ingest_instances(f.read_bytes() for f in sorted(Path(study.dicom_dir).rglob("*.dcm")))
    (run_id,) = make_ready(study.study_uid, registry)
    return study, run_id


def make_ready(study_uid: str, registry=None) -> list[str]:  # noqa: ANN001
    """The readiness sweep `radpath serve` runs, a day after the images came (every quiet period
    and force-ready wait has passed): the pathway runs it handed this study to."""
    import datetime as dt

    from integrations.db import ledger
    from integrations.db.models import utcnow
    from integrations.db.studies import sweep_readiness

    ready = sweep_readiness(now=utcnow() + dt.timedelta(days=1), registry=registry)
    return [run_id for study in ready for run_id in study.run_ids if ledger.run_view(run_id).study_uid == study_uid]
