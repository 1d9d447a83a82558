"""encoder states: statistics fitted once per field (tabular means, scales, vocabularies)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mms_encoder_states",
        sa.Column("collection", sa.String, primary_key=True),
        sa.Column("field", sa.String, primary_key=True),
        sa.Column("encoder_key", sa.String, primary_key=True),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mms_encoder_states")
