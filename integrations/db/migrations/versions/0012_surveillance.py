"""Surveillance plans: the follow-up scan a result recommended, and its failsafe

Revision ID: 0012_surveillance
Revises: 0011_peer_health

A lung result recommending CT at 3 or 12 months (BTS 2015) opens a plan; a later study of the
same patient for the same pathway closes it; past its due date plus the spec's grace period
the failsafe flow alerts once (issue 17).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_surveillance"
down_revision = "0011_peer_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "surveillance_plan",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("result_id", sa.String(), sa.ForeignKey("result.id"), nullable=False, unique=True),
        sa.Column("patient_key", sa.String(), nullable=False),
        sa.Column("pathway", sa.String(), nullable=False),
        sa.Column("recommendation_code", sa.String(), nullable=False),
        sa.Column("baseline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by_run_id", sa.String(), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_surveillance_plan_patient_key", "surveillance_plan", ["patient_key"])
    op.create_index("ix_surveillance_plan_status", "surveillance_plan", ["status"])


def downgrade() -> None:
    op.drop_index("ix_surveillance_plan_status", table_name="surveillance_plan")
    op.drop_index("ix_surveillance_plan_patient_key", table_name="surveillance_plan")
    op.drop_table("surveillance_plan")
