"""The radiologist's signed report of an exam, read back for the evidence loop

Revision ID: 0013_radiologist_report
Revises: 0012_surveillance

An ORU^R01 from the RIS (OBR-25 F or C) is matched to its order; each pathway keeps its reading
of the report, to compare with the AI result (issue 16). The text is kept only for the trust's
retention period.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_radiologist_report"
down_revision = "0012_surveillance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "radiologist_report",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("order_id", sa.String(), sa.ForeignKey("imaging_order.id"), nullable=False, unique=True),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("result_status", sa.String(), nullable=False),
        sa.Column("corrections", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("readings", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("text_purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("radiologist_report")
