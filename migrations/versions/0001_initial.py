"""initial catalog: collections, counters, encoders, fields, records, embeddings, indexes,
ingest runs

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mms_collections",
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("config", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "mms_counters",
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "mms_encoders",
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("params", sa.String, nullable=False),
        sa.Column("plugin", sa.String, nullable=False),
        sa.Column("plugin_version", sa.String, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("metric", sa.String, nullable=False),
        sa.Column("space", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "mms_fields",
        sa.Column("collection", sa.String, primary_key=True),
        sa.Column("field", sa.String, primary_key=True),
        sa.Column("modality", sa.String, nullable=False),
        sa.Column("encoder_key", sa.String, nullable=False),
    )
    op.create_table(
        "mms_records",
        sa.Column("collection", sa.String, nullable=False),
        sa.Column("id", sa.String, nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String, nullable=False),
        sa.Column("label", sa.String),
        sa.Column("ts", sa.DateTime),
        sa.Column("meta", sa.String),
        sa.Column("sources", sa.String, nullable=False),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "mms_embeddings",
        sa.Column("vid", sa.BigInteger, nullable=False),
        sa.Column("collection", sa.String, nullable=False),
        sa.Column("record_id", sa.String, nullable=False),
        sa.Column("field", sa.String, nullable=False),
        sa.Column("encoder_key", sa.String, nullable=False),
        sa.Column("source_hash", sa.String, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "mms_indexes",
        sa.Column("collection", sa.String, primary_key=True),
        sa.Column("field", sa.String, primary_key=True),
        sa.Column("encoder_key", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("file", sa.String, nullable=False),
        sa.Column("checksum", sa.String, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last_vid", sa.BigInteger, nullable=False),
        sa.Column("params", sa.String, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "mms_ingest_runs",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("collection", sa.String, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("written", sa.BigInteger, nullable=False),
        sa.Column("unchanged", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for name in ("mms_ingest_runs", "mms_indexes", "mms_embeddings", "mms_records",
                 "mms_fields", "mms_encoders", "mms_counters", "mms_collections"):
        op.drop_table(name)
