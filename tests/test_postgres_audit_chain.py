"""The audit chain tests (tests/test_audit_chain.py), the same tests on PostgreSQL: sealers in
parallel serialise on an advisory lock there."""

from __future__ import annotations

from tests.test_audit_chain import *
from tests.test_postgres_ledger import radpath_env  # noqa: F401
