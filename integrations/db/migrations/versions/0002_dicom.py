"""DICOM front door: study patient keys, late images, revision, orphan time

Revision ID: 0002_dicom
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_dicom"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_keys", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("late_instances", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("orphaned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        for column in ("orphaned_at", "revision", "late_instances", "patient_keys"):
            batch_op.drop_column(column)
