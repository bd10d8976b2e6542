"""A destination can be paused by ops

Revision ID: 0009_destination_pause
Revises: 0008_delivery_first_attempt

`radpath deliveries pause DEST` (issue 22): while a destination has a row here the outbox
does not attempt it, so its deliveries wait instead of being dead-lettered; `resume` deletes
the row and moves the pending rows' dead-letter window on by the time paused.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_destination_pause"
down_revision = "0008_delivery_first_attempt"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "destination_pause",
        sa.Column("destination", sa.String(), primary_key=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_by", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("destination_pause")
