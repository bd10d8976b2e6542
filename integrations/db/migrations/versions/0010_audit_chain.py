"""The audit trail is sealed into a keyed hash chain

Revision ID: 0010_audit_chain
Revises: 0009_destination_pause

Each audit event gets a sequence number and an HMAC-SHA256 over its content and the previous
event's chain value, when it is sealed (`integrations/db/audit.py`): `radpath audit verify`
then finds an edited, deleted or reordered row. Rows written before sealing existed are sealed
on the first pass, in id order.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_audit_chain"
down_revision = "0009_destination_pause"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chain", sa.String(64), nullable=True))
    op.create_index("ix_audit_event_seq", "audit_event", ["seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_event_seq", table_name="audit_event")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("chain")
        batch.drop_column("seq")
