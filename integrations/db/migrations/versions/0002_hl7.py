"""HL7 front door: quarantine of rejected bytes, ordering clinician and location on orders

Revision ID: 0002_hl7
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_hl7"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_quarantine",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("peer", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("location", sa.String(), nullable=False),
        sa.Column("control_id", sa.String(), nullable=True),
        sa.Column("message_id", sa.String(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["inbound_message.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("imaging_order") as batch:
        batch.add_column(sa.Column("ordering_clinician", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("ordering_location", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("imaging_order") as batch:
        batch.drop_column("ordering_location")
        batch.drop_column("ordering_clinician")
    op.drop_table("hl7_quarantine")
