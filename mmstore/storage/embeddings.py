"""The embeddings table (``mms_embeddings``), owned here: every statement that reads or writes
it, and the Arrow conversions of its columns. A row is one vector: its ``vid`` (growing
with every write), collection, record id, field, encoder identity (``encoder_key``), the
source hash it was encoded from, and where its float32 values are: row ``pos`` of the
space's segment file (:mod:`mmstore.storage.segments`), or, in an encrypted store, the
``vector`` blob."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmstore.errors import DamagedVectorsError
from mmstore.storage.segments import COMPACT_SHARE

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from mmstore.storage.catalog import Catalog


# -- writing ------------------------------------------------------------------------------
def insert(
    catalog: Catalog,
    conn: Connection,
    collection: str,
    field: str,
    encoder_key: str,
    rows: Sequence[tuple[str, str]],
    vectors: np.ndarray,
) -> np.ndarray:
    """Insert one vector per ``(record id, source hash)`` of ``rows`` through Arrow, in
    the transaction of ``conn``; returns their new vids."""
    n = len(rows)
    vid0 = catalog.next_ids(conn, "vid", n)
    vids = np.arange(vid0, vid0 + n, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, np.float32)
    columns = {
        "vid": pa.array(vids, pa.int64()),
        "collection": pa.repeat(collection, n).cast(pa.string()),
        "record_id": pa.array([rid for rid, _ in rows], pa.string()),
        "field": pa.repeat(field, n).cast(pa.string()),
        "encoder_key": pa.repeat(encoder_key, n).cast(pa.string()),
        "source_hash": pa.array([h for _, h in rows], pa.string()),
    }
    if catalog.segments is None:  # encrypted: the vectors stay in the (encrypted) catalog
        columns["vector"] = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(vectors.shape[1] * 4), n, [None, pa.py_buffer(vectors)]
        )
        value = "vector::BLOB, NULL"
    else:
        pos = catalog.segments.append(conn, collection, field, encoder_key, vectors)
        columns["pos"] = pa.array(pos, pa.int64())
        value = "NULL, pos"
    with catalog.arrow("mms_new_vectors", pa.table(columns)):
        catalog.raw.execute(
            "INSERT INTO mms_embeddings SELECT vid, collection, record_id, field, "
            f"encoder_key, source_hash, {value} FROM mms_new_vectors"
        )
    return vids


def delete_vids(catalog: Catalog, conn: Connection, vids: Sequence[int]) -> None:
    """Delete the vectors of ``vids``."""
    table = pa.table({"vid": pa.array(list(vids), pa.int64())})
    with catalog.arrow("mms_drop_vids", table):
        conn.exec_driver_sql(
            "DELETE FROM mms_embeddings WHERE vid IN (SELECT vid FROM mms_drop_vids)"
        )


def delete_records(conn: Connection, collection: str, ids_table: str) -> list[tuple[int, str]]:
    """Delete every vector of the records named in the registered table ``ids_table``
    (column ``id``); returns the (vid, field) pairs that went."""
    gone = conn.exec_driver_sql(
        "SELECT vid, field FROM mms_embeddings WHERE collection = ? AND record_id IN "
        f"(SELECT id FROM {ids_table})",
        (collection,),
    ).fetchall()
    conn.exec_driver_sql(
        "DELETE FROM mms_embeddings WHERE collection = ? AND record_id IN "
        f"(SELECT id FROM {ids_table})",
        (collection,),
    )
    return [(int(v), str(f)) for v, f in gone]


def delete_other_spaces(
    conn: Connection, collection: str, field: str, encoder_key: str
) -> list[tuple[int, str]]:
    """Delete the field's vectors of every encoder identity but ``encoder_key``; returns
    the (vid, encoder key) pairs that went."""
    gone = conn.exec_driver_sql(
        "DELETE FROM mms_embeddings WHERE collection = ? AND field = ? "
        "AND encoder_key <> ? RETURNING vid, encoder_key",
        (collection, field, encoder_key),
    ).fetchall()
    return [(int(v), str(k)) for v, k in gone]


def compact(catalog: Catalog, conn: Connection, collection: str) -> list[Path]:
    """Rewrite each segment of the collection whose deleted rows are at least
    :data:`~mmstore.storage.segments.COMPACT_SHARE` of it with its live rows only, and drop
    segments with none, in the transaction of ``conn``; returns the replaced files, to be
    removed once it commits."""
    files = catalog.segments
    if files is None:
        return []
    replaced = []
    for seg in files.of_collection(conn, collection):
        t = catalog.query_arrow(
            "SELECT vid, pos FROM mms_embeddings WHERE collection = ? AND field = ? "
            "AND encoder_key = ? ORDER BY pos",
            [collection, seg.field, seg.encoder_key],
        )
        dead = seg.rows - t.num_rows
        if dead == 0 or (t.num_rows and dead < COMPACT_SHARE * seg.rows):
            continue
        if t.num_rows == 0:
            replaced.append(files.drop(conn, seg))
            continue
        replaced.append(files.rewrite(conn, seg, int64s(t.column("pos"))))
        moved = pa.table({"vid": t.column("vid"), "pos": pa.array(np.arange(t.num_rows))})
        with catalog.arrow("mms_moved", moved):
            conn.exec_driver_sql(
                "UPDATE mms_embeddings SET pos = m.pos FROM mms_moved m "
                "WHERE mms_embeddings.vid = m.vid"
            )
    return replaced


def check(catalog: Catalog, collection: str, field: str, key: str) -> str:
    """Every block of one space's segment checked: ``"ok"`` or ``"damaged: <what>"``."""
    if catalog.segments is None:
        return "ok"  # blobs in the catalog, which DuckDB checksums itself
    with catalog.reading() as conn:
        seg = catalog.segments.get(conn, collection, field, key)
        (n,) = conn.exec_driver_sql(
            "SELECT count(*) FROM mms_embeddings WHERE collection = ? AND field = ? "
            "AND encoder_key = ? AND pos IS NOT NULL",
            (collection, field, key),
        ).one()
    if seg is None:
        return "ok" if n == 0 else f"damaged: {n} rows name a segment the catalog lacks"
    problem = catalog.segments.check(seg)
    return "ok" if problem is None else f"damaged: {problem}"


# -- reading ------------------------------------------------------------------------------
def of_records(conn: Connection, collection: str, ids_table: str) -> list[tuple[Any, ...]]:
    """(record id, field, source hash, encoder key, vid) of every stored vector of the
    records named in the registered table ``ids_table`` (column ``id``)."""
    rows = conn.exec_driver_sql(
        "SELECT e.record_id, e.field, e.source_hash, e.encoder_key, e.vid "
        f"FROM mms_embeddings e JOIN {ids_table} c ON e.record_id = c.id "
        "WHERE e.collection = ?",
        (collection,),
    ).fetchall()
    return [tuple(r) for r in rows]


def of_record(catalog: Catalog, collection: str, record_id: str) -> list[tuple[int, str]]:
    """(vid, field) of every stored vector of one record."""
    t = catalog.query_arrow(
        "SELECT vid, field FROM mms_embeddings WHERE collection = ? AND record_id = ?",
        [collection, record_id],
    )
    return list(zip(t.column("vid").to_pylist(), t.column("field").to_pylist(), strict=True))


def vid_by_record(catalog: Catalog, collection: str, field: str, key: str) -> dict[str, int]:
    """The vid of each record's vector in one field's space."""
    t = catalog.query_arrow(
        "SELECT record_id, vid FROM mms_embeddings WHERE collection = ? AND field = ? "
        "AND encoder_key = ?",
        [collection, field, key],
    )
    return dict(zip(t.column("record_id").to_pylist(), t.column("vid").to_pylist(), strict=True))


def hit_rows(catalog: Catalog, collection: str) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """Every vid of a collection in order, the row of its record in the collection's records
    (``label``, ``ts``, ``meta``, ``sources`` by ``id``) as the third value holds them, and
    those records: columns, no object per record."""
    records = catalog.query_arrow(
        "SELECT rowid AS r, id, label, ts, meta, sources FROM mms_records WHERE collection = ?",
        [collection],
    )
    owners = catalog.query_arrow(
        "SELECT e.vid, r.rowid AS r FROM mms_embeddings e JOIN mms_records r "
        "ON r.collection = e.collection AND r.id = e.record_id WHERE e.collection = ? "
        "ORDER BY e.vid",
        [collection],
    )
    rowids, wanted = int64s(records.column("r")), int64s(owners.column("r"))
    if len(rowids) and rowids[-1] - rowids[0] == len(rowids) - 1 and _rising(rowids):
        at = wanted - rowids[0]  # the usual case: one run of rows, in order
    else:
        order = np.argsort(rowids, kind="stable")
        at = order[np.searchsorted(rowids[order], wanted)]
    return int64s(owners.column("vid")), at, records.drop_columns(["r"])


def live_vids(catalog: Catalog, collection: str, field: str, key: str) -> np.ndarray:
    """The vids of one field's space, in order."""
    t = catalog.query_arrow(
        "SELECT vid FROM mms_embeddings WHERE collection = ? AND field = ? "
        "AND encoder_key = ? ORDER BY vid",
        [collection, field, key],
    )
    return int64s(t.column("vid"))


def _rising(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] > values[:-1]))


def live_rows(
    catalog: Catalog, collection: str, field: str, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """The vids of one field's space in order, and the segment row (``pos``) of each, -1
    where the catalog keeps the vector as a blob."""
    t = catalog.query_arrow(
        "SELECT vid, coalesce(pos, -1) AS pos FROM mms_embeddings WHERE collection = ? "
        "AND field = ? AND encoder_key = ? ORDER BY vid",
        [collection, field, key],
    )
    return int64s(t.column("vid")), int64s(t.column("pos"))


def found_at(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``wanted`` would be in the sorted ``keys``, and whether it is there."""
    if not len(keys):
        return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return at, keys[at] == wanted


def rows_of(held: tuple[np.ndarray, np.ndarray], vids: np.ndarray) -> np.ndarray:
    """The value ``held`` (sorted vids, and a value for each: :func:`live_rows` gives
    segment rows) pairs with each of ``vids``, -1 where it holds no such vid."""
    known, values = held
    at, found = found_at(known, vids)
    out = np.full(len(vids), -1, np.int64)
    out[found] = values[at[found]]
    return out


def vectors_after(
    catalog: Catalog, collection: str, field: str, key: str, dim: int, after: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Vids and vectors of one field's space newer than ``after``, in vid order."""
    t = catalog.query_arrow(
        f"SELECT vid, {_VALUE} FROM mms_embeddings WHERE collection = ? AND field = ? "
        "AND encoder_key = ? AND vid > ? ORDER BY vid",
        [collection, field, key, after],
    )
    return int64s(t.column("vid")), matrix_of(catalog, t, collection, field, key, dim)


def vectors_of_records(
    catalog: Catalog, collection: str, field: str, key: str, dim: int, ids_table: str
) -> tuple[pa.Table, np.ndarray]:
    """record_id and vid of one field's space for the records named in the registered
    table ``ids_table``, in vid order, and their vectors."""
    t = catalog.query_arrow(
        f"SELECT record_id, vid, {_VALUE} FROM mms_embeddings WHERE collection = ? "
        f"AND field = ? AND encoder_key = ? AND record_id IN (SELECT id FROM {ids_table}) "
        "ORDER BY vid",
        [collection, field, key],
    )
    return t.select(["record_id", "vid"]), matrix_of(catalog, t, collection, field, key, dim)


def stored(catalog: Catalog, collection: str) -> pa.Table:
    """Every vector row of a collection (vid, record_id, field, encoder_key, source_hash)
    with its values as a float32 list column ``vector``, in vid order (for checks and
    exports; the whole collection is read)."""
    t = catalog.query_arrow(
        f"SELECT vid, record_id, field, encoder_key, source_hash, {_VALUE} "
        "FROM mms_embeddings WHERE collection = ? ORDER BY vid",
        [collection],
    )
    lists = pa.list_(pa.float32())
    parts = [
        t.drop_columns(["pos", "vector"]).slice(0, 0).append_column("vector", pa.array([], lists))
    ]
    for field, key in sorted(
        set(zip(t["field"].to_pylist(), t["encoder_key"].to_pylist(), strict=True))
    ):
        rows = t.filter(pc.and_(pc.equal(t["field"], field), pc.equal(t["encoder_key"], key)))
        matrix = matrix_of(
            catalog, rows, collection, field, key, _dim(catalog, rows, collection, field, key)
        )
        values = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
        parts.append(
            rows.drop_columns(["pos", "vector"]).append_column("vector", values.cast(lists))
        )
    return pa.concat_tables(parts).sort_by("vid")


def _dim(catalog: Catalog, rows: pa.Table, collection: str, field: str, key: str) -> int:
    if catalog.segments is not None and rows["pos"].null_count == 0:
        with catalog.reading() as conn:
            seg = catalog.segments.get(conn, collection, field, key)
        if seg is not None:
            return seg.dim
    first = rows["vector"][0].as_py()
    return 0 if first is None else len(first) // 4


#: the columns that say where a row's values are
_VALUE = "pos, vector"


def matrix_of(
    catalog: Catalog, t: pa.Table, collection: str, field: str, key: str, dim: int
) -> np.ndarray:
    """The vectors of rows ``t`` (columns ``pos`` and ``vector``) of one space, in order:
    read from its segment file (each block checked first), or from the blobs."""
    if t.num_rows == 0:
        return np.empty((0, dim), np.float32)
    if t.column("pos").null_count == 0 and catalog.segments is not None:
        with catalog.reading() as conn:
            seg = catalog.segments.get(conn, collection, field, key)
        if seg is None:
            raise DamagedVectorsError(
                str(catalog.path.parent), collection, field, "no segment is recorded for it"
            )
        return catalog.segments.read(seg, int64s(t.column("pos")))
    if t.column("vector").null_count:
        raise DamagedVectorsError(
            str(catalog.path.parent), collection, field, "rows name neither a blob nor a segment"
        )
    return blobs_to_matrix(t.column("vector"), dim)


def pending_in_space(
    catalog: Catalog, collection: str, field: str, old_key: str, new_key: str
) -> pa.Table:
    """Per record with a vector in the field's ``old_key`` space: its id, source hash, and
    whether it has one in ``new_key``'s too (``done``), by record id."""
    return catalog.query_arrow(
        "SELECT o.record_id, o.source_hash, n.vid IS NOT NULL AS done "
        "FROM mms_embeddings o LEFT JOIN mms_embeddings n ON n.collection = o.collection "
        "AND n.record_id = o.record_id AND n.field = o.field AND n.encoder_key = ? "
        "WHERE o.collection = ? AND o.field = ? AND o.encoder_key = ? ORDER BY o.record_id",
        [new_key, collection, field, old_key],
    )


def counts_by_encoder(catalog: Catalog, collection: str) -> list[dict[str, Any]]:
    """Per field and encoder identity: the encoder's name and version and how many
    vectors it wrote."""
    return list(
        catalog.query_arrow(
            "SELECT e.field, e.encoder_key, c.name, c.version, count(*) AS n "
            "FROM mms_embeddings e JOIN mms_encoders c ON c.key = e.encoder_key "
            "WHERE e.collection = ? GROUP BY ALL ORDER BY ALL",
            [collection],
        ).to_pylist()
    )


# -- columns ------------------------------------------------------------------------------
def int64s(column: pa.ChunkedArray) -> np.ndarray:
    """A BIGINT column without nulls as an int64 array, read from its buffers: pyarrow's
    ``to_numpy`` imports pandas (0.3 s of a reopened store's first search)."""
    parts = [
        np.frombuffer(c.buffers()[1], np.int64, len(c), c.offset * 8)
        for c in column.chunks
        if len(c)
    ]
    if any(c.null_count for c in column.chunks) or column.type != pa.int64():
        raise ValueError(f"expected an int64 column without nulls, got {column.type}")
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def blobs_to_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A column of float32 blobs as an ``(n, dim)`` array (one copy, no per-row Python)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.empty((0, dim), np.float32)
    if pa.types.is_fixed_size_binary(array.type):
        data = np.frombuffer(array.buffers()[1], np.uint8, n * dim * 4, array.offset * dim * 4)
    else:
        if array.type != pa.large_binary():
            array = array.cast(pa.large_binary())
        offsets = np.frombuffer(array.buffers()[1], np.int64, n + 1, array.offset * 8)
        if not (np.diff(offsets) == dim * 4).all():
            raise ValueError(f"stored vectors are not all {dim}-dimensional float32")
        data = np.frombuffer(array.buffers()[2], np.uint8, n * dim * 4, int(offsets[0]))
    return data.view(np.float32).reshape(n, dim).copy()
