"""Completion signals: the modality's MPPS and the RIS's exam-completed status

Revision ID: 0014_completion_signals
Revises: 0013_radiologist_report

An MPPS N-SET COMPLETED lists the instances the modality made; a study holding all of them is
ready at once instead of after the quiet period. An order status "CM" from the RIS (HL7 ORC-5)
shortens the quiet period to the spec's `completed_quiet_seconds` (issue 15).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_completion_signals"
down_revision = "0013_radiologist_report"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "performed_procedure_step",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("study_uid", sa.String(), nullable=False, server_default=""),
        sa.Column("accession_number", sa.String(), nullable=False, server_default=""),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("instance_uids", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("calling_ae", sa.String(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_performed_procedure_step_study_uid", "performed_procedure_step", ["study_uid"])
    op.create_index("ix_performed_procedure_step_accession_number", "performed_procedure_step", ["accession_number"])
    with op.batch_alter_table("imaging_order") as batch:
        batch.add_column(sa.Column("exam_completed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("imaging_order") as batch:
        batch.drop_column("exam_completed_at")
    op.drop_table("performed_procedure_step")
