"""Orders keep the namespace and identifier system of their placer order number

Revision ID: 0006_placer_system
Revises: 0005_result_provenance

A FHIR DiagnosticReport's basedOn names the ServiceRequest by its placer identifier; the EHR
matches it only with the system it issued the number under (FHIR ServiceRequest.identifier
typed PLAC, or HL7 v2 ORC-2 EI-3/EI-4); an ORU^R01 echoes the placer's EI as sent, namespace
(EI-2) included. Orders recorded before this revision have '' (the report then uses
radpath's own system and the ORU the bare number, as before).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_placer_system"
down_revision = "0005_result_provenance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("imaging_order", schema=None) as batch_op:
        batch_op.add_column(sa.Column("placer_namespace", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("placer_system", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("imaging_order", schema=None) as batch_op:
        batch_op.drop_column("placer_system")
        batch_op.drop_column("placer_namespace")
