"""vector segments: each space's float32 vectors move out of the catalog's BLOB column into
one append-only file beside it (vectors/<collection>/), named and checksummed by the new
table mms_segments; an encrypted store keeps its BLOBs (a segment file is not encrypted)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import numpy as np
import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: vectors moved per read of the old column
CHUNK = 65_536


def upgrade() -> None:
    op.add_column("mms_embeddings", sa.Column("pos", sa.BigInteger))
    op.alter_column("mms_embeddings", "vector", nullable=True)
    op.create_table(
        "mms_segments",
        sa.Column("collection", sa.String, primary_key=True),
        sa.Column("field", sa.String, primary_key=True),
        sa.Column("encoder_key", sa.String, primary_key=True),
        sa.Column("file", sa.String, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("crcs", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    files = context.config.attributes.get("segments")
    if files is not None:  # None: an encrypted store, whose vectors stay in the catalog
        _move(op.get_bind(), files)


def _move(conn: sa.Connection, files: object) -> None:
    """Append each space's vectors to its segment in vid order and point the rows at them."""
    from mmstore.storage.embeddings import blobs_to_matrix, int64s

    raw = conn.connection.driver_connection
    spaces = conn.exec_driver_sql(
        "SELECT DISTINCT collection, field, encoder_key FROM mms_embeddings "
        "WHERE vector IS NOT NULL ORDER BY ALL"
    ).all()
    for collection, field, key in spaces:
        after = -1
        while True:
            t = raw.sql(
                "SELECT vid, vector FROM mms_embeddings WHERE collection = ? AND field = ? "
                f"AND encoder_key = ? AND vid > ? ORDER BY vid LIMIT {CHUNK}",
                params=[collection, field, key, after],
            ).to_arrow_table()
            if t.num_rows == 0:
                break
            vids = int64s(t.column("vid"))
            dim = len(t.column("vector")[0].as_py()) // 4
            pos = files.append(conn, collection, field, key, blobs_to_matrix(t["vector"], dim))  # type: ignore[attr-defined]
            _point(conn, raw, vids, pos)
            after = int(vids[-1])


def _point(conn: sa.Connection, raw: object, vids: np.ndarray, pos: np.ndarray) -> None:
    import pyarrow as pa

    moved = pa.table({"vid": pa.array(vids), "pos": pa.array(pos)})
    raw.register("mms_moved", moved)  # type: ignore[attr-defined]
    try:
        conn.exec_driver_sql(
            "UPDATE mms_embeddings SET pos = m.pos, vector = NULL FROM mms_moved m "
            "WHERE mms_embeddings.vid = m.vid"
        )
    finally:
        raw.unregister("mms_moved")  # type: ignore[attr-defined]


def downgrade() -> None:
    raise NotImplementedError("0004 moves vectors into segment files; restore a backup")
