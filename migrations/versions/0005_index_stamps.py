"""index stamps: the manifest of an index file keeps the file's identity and change times
from its last full check (mmstore.storage.stamp), so that reopening an unchanged file does
not hash it again; NULL (never stamped) for every existing row

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("mms_indexes", sa.Column("stamp", sa.String))


def downgrade() -> None:
    op.drop_column("mms_indexes", "stamp")
