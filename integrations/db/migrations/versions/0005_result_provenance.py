"""Results keep the model name and source series they were made from

Revision ID: 0005_result_provenance
Revises: 0004_supersede

An amendment at clinical review re-renders the report messages from the recorded result,
in another flow run than the pathway's: it needs the provenance the outputs carry. Results
recorded before this revision have NULLs (they cannot be amended, only accepted or rejected).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_result_provenance"
down_revision = "0004_supersede"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_name", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("source_series_uid", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("result", schema=None) as batch_op:
        batch_op.drop_column("source_series_uid")
        batch_op.drop_column("model_name")
