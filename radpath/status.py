"""Counts over the ledger for `radpath status` (no patient data)."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import Delivery, Order, PathwayRun, Study


def ledger_summary() -> dict[str, dict[str, int]]:
    summary = {}
    with session_scope() as session:
        for title, column in (
            ("orders", Order.status),
            ("studies", Study.status),
            ("pathway runs", PathwayRun.status),
            ("deliveries", Delivery.status),
        ):
            rows = session.exec(select(column, func.count()).group_by(column)).all()
            summary[title] = {status: count for status, count in rows}
    return summary
