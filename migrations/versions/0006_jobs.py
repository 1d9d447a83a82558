"""jobs: the service's background jobs (head training) and how each ended, so that a
restarted service still reports them and marks the ones it was running as interrupted

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mms_jobs",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("collection", sa.String),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("error", sa.String),
        sa.Column("report", sa.String),
    )


def downgrade() -> None:
    op.drop_table("mms_jobs")
