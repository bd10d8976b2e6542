"""Supersede on late images: results carry the study revision they were made from

Revision ID: 0004_supersede
Revises: 0003_ops

The result identity becomes (study UID, pathway, model version, study revision), so a re-run
after late images makes a new result instead of finding the old one; the old result records
which result superseded it. Existing results are revision 0 and keep their ids.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_supersede"
down_revision = "0003_ops"
branch_labels = None
depends_on = None

IDENTITY = ("study_uid", "pathway", "model_version")
NEW_NAME = "uq_result_identity"
# 0001 left the old constraint unnamed. SQLite: batch mode reflects it and names it by this
# convention so it can be dropped; PostgreSQL named it table_columns_key itself.
CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
SQLITE_OLD_NAME = "uq_result_study_uid_pathway_model_version"
POSTGRES_OLD_NAME = "result_study_uid_pathway_model_version_key"


def _old_name() -> str:
    return SQLITE_OLD_NAME if op.get_bind().dialect.name == "sqlite" else POSTGRES_OLD_NAME


def upgrade() -> None:
    with op.batch_alter_table("result", schema=None, naming_convention=CONVENTION) as batch_op:
        batch_op.add_column(sa.Column("study_revision", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("superseded_by", sa.String(), nullable=True))
        batch_op.drop_constraint(_old_name(), type_="unique")
        batch_op.create_unique_constraint(NEW_NAME, [*IDENTITY, "study_revision"])


def downgrade() -> None:
    # Fails, as it should, while a study has results from more than one revision.
    with op.batch_alter_table("result", schema=None, naming_convention=CONVENTION) as batch_op:
        batch_op.drop_constraint(NEW_NAME, type_="unique")
        batch_op.create_unique_constraint(_old_name(), list(IDENTITY))
        batch_op.drop_column("superseded_by")
        batch_op.drop_column("study_revision")
