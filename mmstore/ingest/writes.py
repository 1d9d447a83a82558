"""What an ingest call writes to the catalog besides vectors: its run row (also for a call
that failed), and the records of a chunk through Arrow; and what it reads first, the stored
state of the chunk's ids. Vectors go through :mod:`mmstore.storage.embeddings`."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pyarrow as pa
from sqlalchemy.engine import Connection

from mmstore.errors import StorageError
from mmstore.ingest import records as rec
from mmstore.ingest.changes import Stored
from mmstore.ingest.report import IngestReport
from mmstore.storage import embeddings, schema
from mmstore.storage import failures as storage
from mmstore.storage.catalog import Catalog

log = logging.getLogger(__name__)
_NO_COUNTS = {"received": 0, "written": 0, "unchanged": 0, "rejected": 0}


def now() -> dt.datetime:
    """The time in UTC, naive, as the catalog keeps it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def start_run(catalog: Catalog, conn: Connection, collection: str, started: dt.datetime) -> int:
    """A new ingest run, ``running`` until :func:`finish_run`; its id."""
    run_id = catalog.next_ids(conn, "run", 1)
    conn.execute(
        schema.ingest_runs.insert().values(
            id=run_id, collection=collection, started_at=started, status="running", **_NO_COUNTS
        )
    )
    return run_id


def finish_run(conn: Connection, report: IngestReport) -> None:
    runs = schema.ingest_runs
    conn.execute(
        runs.update()
        .where(runs.c.id == report.run_id)
        .values(
            finished_at=now(),
            status="committed",
            received=report.received,
            written=report.written,
            unchanged=report.unchanged,
            rejected=len(report.rejected),
        )
    )


def record_failure(
    catalog: Catalog, collection: str, started: dt.datetime, error: BaseException
) -> None:
    """Leave a trace of a call that wrote nothing (never masking its error)."""
    try:
        with catalog.transaction() as conn:
            conn.execute(
                schema.ingest_runs.insert().values(
                    id=catalog.next_ids(conn, "run", 1),
                    collection=collection,
                    started_at=started,
                    finished_at=now(),
                    status=f"failed: {type(error).__name__}",
                    **_NO_COUNTS,
                )
            )
    except Exception as e:
        if storage.fault_errno(e) is None and not isinstance(e, StorageError):
            log.exception("could not record the failed ingest run")
        else:  # the disk that refused the ingest refuses its trace too
            log.warning("could not record the failed ingest run: %s", e)


def stored(catalog: Catalog, conn: Connection, collection: str, ids: list[str]) -> Stored:
    """For ids already stored: content hash, and per field its stored vectors (source
    hash, encoder key, vid): normally one, more only if other spaces were left."""
    out: Stored = {}
    ids_table = pa.table({"id": pa.array(ids, pa.string())})
    with catalog.arrow("mms_chunk_ids", ids_table):
        rows = conn.exec_driver_sql(
            "SELECT r.id, r.content_hash FROM mms_records r JOIN mms_chunk_ids c "
            "ON r.id = c.id WHERE r.collection = ?",
            (collection,),
        ).fetchall()
        if not rows:
            return out
        for rid, content_hash in rows:
            out[rid] = (content_hash, {})
        embs = embeddings.of_records(conn, collection, "mms_chunk_ids")
    for rid, fname, source_hash, key, vid in embs:
        out[rid][1].setdefault(fname, []).append((source_hash, key, vid))
    return out


def delete_records(catalog: Catalog, conn: Connection, collection: str, ids: list[str]) -> None:
    """Delete the record rows of ``ids`` (their vectors are the caller's)."""
    table = pa.table({"id": pa.array(ids, pa.string())})
    with catalog.arrow("mms_chunk_ids", table):
        conn.exec_driver_sql(
            "DELETE FROM mms_records WHERE collection = ? AND id IN (SELECT id FROM mms_chunk_ids)",
            (collection,),
        )


def insert_records(
    catalog: Catalog, collection: str, changed: list[rec.Prepared], rev0: int, run_id: int
) -> None:
    """Insert the records' rows in one Arrow insert, revisions from ``rev0``."""
    n, at = len(changed), now()
    table = pa.table(
        {
            "collection": pa.array([collection] * n, pa.string()),
            "id": pa.array([p.id for p in changed], pa.string()),
            "rev": pa.array(np.arange(rev0, rev0 + n), pa.int64()),
            "content_hash": pa.array([p.content_hash for p in changed], pa.string()),
            "label": pa.array([p.label for p in changed], pa.string()),
            "ts": pa.array([p.ts for p in changed], pa.timestamp("us")),
            "meta": pa.array([p.meta for p in changed], pa.string()),
            "sources": pa.array([p.sources_json for p in changed], pa.string()),
            "run_id": pa.array([run_id] * n, pa.int64()),
            "updated_at": pa.array([at] * n, pa.timestamp("us")),
        }
    )
    with catalog.arrow("mms_new_records", table):
        catalog.raw.execute("INSERT INTO mms_records SELECT * FROM mms_new_records")
