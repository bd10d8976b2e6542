"""The tests of tests/test_radiologist_reports.py, the same tests on PostgreSQL (a fresh database per
test; see tests/test_postgres_ledger.py for the `radpath_env` override)."""

from __future__ import annotations

from tests.test_postgres_ledger import radpath_env  # noqa: F401  (overrides conftest's)
from tests.test_radiologist_reports import *
