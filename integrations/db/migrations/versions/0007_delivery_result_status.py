"""A destination may receive a result more than once along its life cycle

Revision ID: 0007_delivery_result_status
Revises: 0006_placer_system

A clinical pathway with review sends the preliminary at once where a destination takes it,
then the reviewer's final (or, on reject, a cancellation) to the same destination: one outbox
row per result, destination and result status (pathways/result_status.py). Existing rows are
the first a destination got for the result: 'preliminary' (a held row re-rendered at review
keeps its row; its status column then says what it carries).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_delivery_result_status"
down_revision = "0006_placer_system"
branch_labels = None
depends_on = None

NEW_NAME = "uq_delivery_result_destination_status"
# 0001 left the old constraint unnamed (see 0004_supersede for the same case on result).
CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
SQLITE_OLD_NAME = "uq_delivery_result_id_destination"
POSTGRES_OLD_NAME = "delivery_result_id_destination_key"


def _old_name() -> str:
    return SQLITE_OLD_NAME if op.get_bind().dialect.name == "sqlite" else POSTGRES_OLD_NAME


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None, naming_convention=CONVENTION) as batch_op:
        batch_op.add_column(sa.Column("result_status", sa.String(), server_default="preliminary", nullable=False))
        batch_op.drop_constraint(_old_name(), type_="unique")
        batch_op.create_unique_constraint(NEW_NAME, ["result_id", "destination", "result_status"])


def downgrade() -> None:
    # Fails, as it should, while a destination holds two rows for one result.
    with op.batch_alter_table("delivery", schema=None, naming_convention=CONVENTION) as batch_op:
        batch_op.drop_constraint(NEW_NAME, type_="unique")
        batch_op.create_unique_constraint(_old_name(), ["result_id", "destination"])
        batch_op.drop_column("result_status")
