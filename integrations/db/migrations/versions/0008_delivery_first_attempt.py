"""The outbox remembers when a delivery was first tried

Revision ID: 0008_delivery_first_attempt
Revises: 0007_delivery_result_status

The outbox is the only retry scheduler (issue 13): a transient failure is retried on an
exponential, jittered, capped schedule until a per-destination window since the first
attempt has passed, then dead-lettered; no longer after a count of attempts. The window
needs the first attempt's time. Rows tried before this revision have NULL: their window
starts at their next failure.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_delivery_first_attempt"
down_revision = "0007_delivery_result_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("first_attempt_at")
