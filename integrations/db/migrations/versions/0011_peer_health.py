"""The last health check of each front door and destination

Revision ID: 0011_peer_health
Revises: 0010_audit_chain

`radpath serve` checks its listeners and every destination every `health_check_seconds`, and
each delivery attempt tells the same row whether the peer answered (issue 22). `/health`,
`radpath status` and the radpath-health table read it; a change of state is an event.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_peer_health"
down_revision = "0010_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peer_health",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_down_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("peer_health")
