"""Operations: reconciler leases on runs and deliveries, clinical review on results

Revision ID: 0003_ops
Revises: 0002_dicom, 0002_hl7 (also merges the two front-door branches)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_ops"
down_revision = ("0002_dicom", "0002_hl7")
branch_labels = None
depends_on = None

LEASE = ("claimed_by", "claimed_until")
REVIEW = ("review_status", "reviewed_by", "review_reason", "reviewed_at")


def _lease_columns(batch_op) -> None:  # noqa: ANN001
    batch_op.add_column(sa.Column("claimed_by", sa.String(), nullable=True))
    batch_op.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def upgrade() -> None:
    with op.batch_alter_table("pathway_run", schema=None) as batch_op:
        _lease_columns(batch_op)
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        _lease_columns(batch_op)
    with op.batch_alter_table("result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_status", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("reviewed_by", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("review_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("result", schema=None) as batch_op:
        for column in reversed(REVIEW):
            batch_op.drop_column(column)
    for table in ("delivery", "pathway_run"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in reversed(LEASE):
                batch_op.drop_column(column)
