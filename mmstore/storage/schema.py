"""The catalog schema, declared once: Alembic's migrations must produce exactly this.

The large tables (records, embeddings) carry no primary-key index: DuckDB's ART index makes
bulk inserts several times slower, and the single writer keeps ids unique itself.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

collections = sa.Table(
    "mms_collections",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("config", sa.String, nullable=False),  # JSON of CollectionConfig
    sa.Column("created_at", sa.DateTime, nullable=False),
)

counters = sa.Table(
    "mms_counters",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

encoders = sa.Table(
    "mms_encoders",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("version", sa.String, nullable=False),
    sa.Column("params", sa.String, nullable=False),  # JSON, secrets never included
    sa.Column("plugin", sa.String, nullable=False),
    sa.Column("plugin_version", sa.String, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("metric", sa.String, nullable=False),
    sa.Column("space", sa.String, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

fields = sa.Table(
    "mms_fields",
    metadata,
    sa.Column("collection", sa.String, primary_key=True),
    sa.Column("field", sa.String, primary_key=True),
    sa.Column("modality", sa.String, nullable=False),
    sa.Column("encoder_key", sa.String, nullable=False),
)

records = sa.Table(
    "mms_records",
    metadata,
    sa.Column("collection", sa.String, nullable=False),
    sa.Column("id", sa.String, nullable=False),
    sa.Column("rev", sa.BigInteger, nullable=False),
    sa.Column("content_hash", sa.String, nullable=False),
    sa.Column("label", sa.String),
    sa.Column("ts", sa.DateTime),
    sa.Column("meta", sa.String),  # JSON object
    sa.Column("sources", sa.String, nullable=False),  # JSON: field -> stored source
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

embeddings = sa.Table(
    "mms_embeddings",
    metadata,
    sa.Column("vid", sa.BigInteger, nullable=False),
    sa.Column("collection", sa.String, nullable=False),
    sa.Column("record_id", sa.String, nullable=False),
    sa.Column("field", sa.String, nullable=False),
    sa.Column("encoder_key", sa.String, nullable=False),
    sa.Column("source_hash", sa.String, nullable=False),
    # float32 little-endian, dim * 4 bytes: only in an encrypted store (elsewhere NULL, and
    # the vector is row ``pos`` of the space's segment file, mmstore.storage.segments)
    sa.Column("vector", sa.LargeBinary),
    sa.Column("pos", sa.BigInteger),
)

segments = sa.Table(
    "mms_segments",
    metadata,
    sa.Column("collection", sa.String, primary_key=True),
    sa.Column("field", sa.String, primary_key=True),
    sa.Column("encoder_key", sa.String, primary_key=True),
    sa.Column("file", sa.String, nullable=False),  # under vectors/<collection>/
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),  # committed rows, live or deleted
    sa.Column("crcs", sa.LargeBinary, nullable=False),  # uint32 CRC-32 per block
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

indexes = sa.Table(
    "mms_indexes",
    metadata,
    sa.Column("collection", sa.String, primary_key=True),
    sa.Column("field", sa.String, primary_key=True),
    sa.Column("encoder_key", sa.String, nullable=False),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("file", sa.String, nullable=False),
    sa.Column("checksum", sa.String, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("last_vid", sa.BigInteger, nullable=False),
    sa.Column("params", sa.String, nullable=False),  # JSON
    sa.Column("updated_at", sa.DateTime, nullable=False),
    #: the file's identity and change times at its last full check (storage/stamp.py)
    sa.Column("stamp", sa.String),
)

ingest_runs = sa.Table(
    "mms_ingest_runs",
    metadata,
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

encoder_states = sa.Table(
    "mms_encoder_states",
    metadata,
    sa.Column("collection", sa.String, primary_key=True),
    sa.Column("field", sa.String, primary_key=True),
    sa.Column("encoder_key", sa.String, primary_key=True),
    sa.Column("state", sa.String, nullable=False),  # JSON of the fitted statistics
    sa.Column("created_at", sa.DateTime, nullable=False),
)

api_keys = sa.Table(
    "mms_api_keys",
    metadata,
    sa.Column("id", sa.String, primary_key=True),  # public id, "k_" + 8 hex
    sa.Column("name", sa.String, nullable=False),
    sa.Column("hash", sa.String, nullable=False),  # "pbkdf2_sha256$<iterations>$<hex>"
    sa.Column("salt", sa.String, nullable=False),  # hex, one per key
    sa.Column("scopes", sa.String, nullable=False),  # JSON list of read/write/admin
    sa.Column("collections", sa.String, nullable=False),  # JSON list, ["*"] for all
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime),
    sa.Column("last_used_at", sa.DateTime),
)

jobs = sa.Table(
    "mms_jobs",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("kind", sa.String, nullable=False),  # train_head
    sa.Column("collection", sa.String),
    sa.Column("status", sa.String, nullable=False),  # queued running done failed interrupted
    sa.Column("created_at", sa.DateTime, nullable=False),  # UTC
    sa.Column("finished_at", sa.DateTime),
    sa.Column("error", sa.String),  # JSON of the error body
    sa.Column("report", sa.String),  # JSON of the job's report
)
