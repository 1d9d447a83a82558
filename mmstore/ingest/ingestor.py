"""Ingest: validate records, skip unchanged ones, encode what changed in batches, and write
records and vectors to the catalog in bulk through Arrow, all in one transaction per call.
Indexes and the hit cache follow only after the commit."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
from sqlalchemy.engine import Connection

from mmstore.encoding.encode import checked_rows, encode_rows, load_values, unusable_value
from mmstore.encoding.fields import Field
from mmstore.encoding.fitted import ensure_fitted
from mmstore.errors import (
    InvalidInputError,
    RecordError,
    StorageError,
)
from mmstore.index.commit import Change, after_commit
from mmstore.index.hitcache import RecordRow
from mmstore.ingest import records as rec
from mmstore.ingest import sources
from mmstore.plugin.events import BatchEncoded, IngestCommitted, IngestFinished
from mmstore.storage import embeddings, schema
from mmstore.storage import failures as storage

if TYPE_CHECKING:
    from mmstore.collection import Collection

log = logging.getLogger(__name__)
OnError = Literal["raise", "skip"]
#: vectors kept in memory for the index after commit; past this the index re-reads them
PENDING_LIMIT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Rejected:
    """A record left out by ``on_error="skip"``, and why."""

    id: str
    field: str | None
    reason: str


@dataclass
class IngestReport:
    """What one ``ingest`` call did."""

    run_id: int
    received: int = 0
    written: int = 0
    unchanged: int = 0
    encoded: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"ingest run {self.run_id}: {self.received} received, {self.written} written, "
            f"{self.unchanged} unchanged, {len(self.rejected)} rejected, "
            f"{self.encoded} vectors encoded in {self.seconds:.2f}s"
        )


class GivenVector(NamedTuple):
    """A vector computed elsewhere (a Ray worker) for one record's field: used instead of
    calling the encoder only when the value's source hash and the encoder identity match
    the field's, and checked like the encoder's own output."""

    source_hash: str
    encoder_key: str
    vector: np.ndarray


@dataclass
class _Pending:
    """Changes to mirror in the indexes and the hit cache once the transaction commits."""

    added: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    removed: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rows: dict[str, RecordRow] = field(default_factory=dict)
    owners: list[tuple[int, str]] = field(default_factory=list)
    removed_owner_vids: list[int] = field(default_factory=list)
    nbytes: int = 0
    overflow: bool = False


class Ingestor:
    """Runs one ``ingest`` call for a collection."""

    def __init__(
        self,
        col: Collection,
        on_error: OnError,
        progress: bool,
        chunk_size: int,
        given: Mapping[tuple[str, str], GivenVector] | None = None,
    ) -> None:
        check_run_options(on_error, "chunk_size", chunk_size)
        self.col, self.on_error, self.progress, self.chunk_size = (
            col,
            on_error,
            progress,
            chunk_size,
        )
        self.catalog = col.store.catalog
        self.hook = col.store.plugins.hook
        self.pending = _Pending()
        self.seen: set[str] = set()
        #: fields whose encoder fitted its state in this call (forgotten if it fails)
        self.fitted: list[Field] = []
        #: vectors already computed, by (record id, field name)
        self.given = given or {}

    def run(self, source: Any) -> IngestReport:
        start = time.perf_counter()
        for name in self.col.fields:
            self.col.check_current(name)
        for f in self.col.fields.values():  # loaded before, so the commit only appends
            self.col.indexes.get(f)
        started = _now()
        with self.catalog.lock:  # held until the in-memory indexes agree with the commit
            try:
                report = self._transaction(source, started)
            except BaseException as error:
                for f in self.fitted:
                    f.encoder.load_state(None)
                self._record_failure(started, error)
                raise
            self._after_commit()
        counts = (report.run_id, report.written, report.unchanged, len(report.rejected))
        store = str(self.col.store.path)
        self.col.store.track(IngestCommitted(store, self.col.name, *counts))
        report.seconds = time.perf_counter() - start
        self.col.store.track(IngestFinished(store, self.col.name, *counts, report.seconds))
        return report

    def _transaction(self, source: Any, started: dt.datetime) -> IngestReport:
        """Everything the call writes, in one transaction: all of it commits, or none."""
        runs = schema.ingest_runs
        action = f"ingest into collection {self.col.name!r}"
        with self.catalog.transaction(action) as conn, self.col.store.media.written_by_call():
            report = IngestReport(self.catalog.next_ids(conn, "run", 1))
            conn.execute(
                runs.insert().values(
                    id=report.run_id,
                    collection=self.col.name,
                    started_at=started,
                    status="running",
                    received=0,
                    written=0,
                    unchanged=0,
                    rejected=0,
                )
            )
            bar = _progress_bar(self.progress, self.col.name)
            for chunk in sources.chunks(source, self.chunk_size):
                self._chunk(conn, chunk, report)
                bar.update(len(chunk))
            bar.close()
            self.col.store.media.sync()  # blobs on disk before the records naming them
            conn.execute(
                runs.update()
                .where(runs.c.id == report.run_id)
                .values(
                    finished_at=_now(),
                    status="committed",
                    received=report.received,
                    written=report.written,
                    unchanged=report.unchanged,
                    rejected=len(report.rejected),
                )
            )
        return report

    def _record_failure(self, started: dt.datetime, error: BaseException) -> None:
        """Leave a trace of a call that wrote nothing (never masking its error)."""
        try:
            with self.catalog.transaction() as conn:
                conn.execute(
                    schema.ingest_runs.insert().values(
                        id=self.catalog.next_ids(conn, "run", 1),
                        collection=self.col.name,
                        started_at=started,
                        finished_at=_now(),
                        status=f"failed: {type(error).__name__}",
                        received=0,
                        written=0,
                        unchanged=0,
                        rejected=0,
                    )
                )
        except Exception as e:
            if storage.fault_errno(e) is None and not isinstance(e, StorageError):
                log.exception("could not record the failed ingest run")
            else:  # the disk that refused the ingest refuses its trace too
                log.warning("could not record the failed ingest run: %s", e)

    # -- one chunk ----------------------------------------------------------------------
    def _chunk(self, conn: Connection, chunk: list[Any], report: IngestReport) -> None:
        offset = report.received
        report.received += len(chunk)
        prepared = self._prepare(chunk, offset, report)
        if not prepared:
            return
        existing = self._existing(conn, [p.id for p in prepared])
        changed = [p for p in prepared if existing.get(p.id, (None, {}))[0] != p.content_hash]
        report.unchanged += len(prepared) - len(changed)
        if not changed:
            return
        drop, todo = self._plan(changed, existing)
        encoding = len(changed)
        changed, todo, vectors = self._encode(conn, changed, todo, report)
        if not changed:
            return
        if len(changed) < encoding:  # rejected records keep what they had
            drop, _ = self._plan(changed, existing)
        rewritten = [p.id for p in changed if p.id in existing]  # the others are new
        self._write(conn, changed, drop, todo, vectors, report, rewritten)
        report.written += len(changed)

    def plan(self, chunk: list[Any], report: IngestReport) -> list[tuple[rec.Prepared, list[str]]]:
        """Without writing records: the chunk's changed records (checked as ingest checks
        them; bad ones follow ``on_error``), each with the fields it needs encoded. An
        engine that encodes elsewhere plans first, then runs with those vectors given."""
        offset = report.received
        report.received += len(chunk)
        prepared = self._prepare(chunk, offset, report)
        if not prepared:
            return []
        with self.catalog.reading() as conn:
            existing = self._existing(conn, [p.id for p in prepared])
        changed = [p for p in prepared if existing.get(p.id, (None, {}))[0] != p.content_hash]
        report.unchanged += len(prepared) - len(changed)
        needed: list[list[str]] = [[] for _ in changed]
        for name, rows in self._plan(changed, existing)[1].items():
            for i in rows:
                needed[i].append(name)
        return list(zip(changed, needed, strict=True))

    def _reject(self, report: IngestReport, error: RecordError) -> None:
        if self.on_error == "raise":
            raise error
        report.rejected.append(Rejected(str(error.record_id), error.field, error.problem))

    def _prepare(self, chunk: list[Any], offset: int, report: IngestReport) -> list[rec.Prepared]:
        shaped: list[dict[str, Any]] = []
        for position, raw in enumerate(chunk, start=offset):
            try:
                rid = rec.record_id(raw, position)
                if rid in self.seen:
                    raise RecordError(
                        rid,
                        "id",
                        "appears more than once in this ingest call; "
                        "merge the duplicates or ingest them in separate calls",
                    )
                self.seen.add(rid)
                rec.check_keys(rid, raw, self.col.fields)
                shaped.append({**raw, "id": rid})
            except RecordError as e:
                self._reject(report, e)
        shaped = self._preprocess(shaped, report)
        prepared = [self._standard(raw, report) for raw in shaped]
        for f in self.col.fields.values():
            self._load_field(f, shaped, prepared, report)
        kept = [p for p in prepared if p is not None]
        # sources last: a modality may write media in to_source, so only records that
        # passed every field get there (a rejected record leaves no blob behind)
        for p in kept:
            for name, value in p.values.items():
                p.sources[name] = self.col.fields[name].modality.to_source(value)
        return [p.finish() for p in kept]

    def _standard(self, raw: dict[str, Any], report: IngestReport) -> rec.Prepared | None:
        """The record's id, label, timestamp and metadata, checked."""
        rid = raw["id"]
        try:
            return rec.Prepared(
                rid,
                rec.parse_label(rid, raw.get("label")),
                rec.parse_ts(rid, raw.get("ts")),
                rec.parse_meta(rid, raw.get("meta")),
            )
        except RecordError as e:
            self._reject(report, e)
            return None

    def _load_field(
        self,
        f: Field,
        shaped: list[dict[str, Any]],
        prepared: list[rec.Prepared | None],
        report: IngestReport,
    ) -> None:
        """Validate one field across the chunk in a single hook call."""
        rows = [
            i for i, p in enumerate(prepared) if p is not None and shaped[i].get(f.name) is not None
        ]
        if not rows:
            return
        values = [shaped[i][f.name] for i in rows]
        ids = [shaped[i]["id"] for i in rows]
        results = load_values(self.hook, f, values, ids, f.name)
        for i, value in zip(rows, results, strict=True):
            p = prepared[i]
            assert p is not None
            if isinstance(value, RecordError):
                self._reject(report, value)
                prepared[i] = None
                continue
            p.values[f.name] = value
            p.hashes[f.name] = rec.field_hash(f.modality.fingerprint(value))

    def _preprocess(
        self, shaped: list[dict[str, Any]], report: IngestReport
    ) -> list[dict[str, Any]]:
        """Run the prepare-records hook on the chunk; on a rejection with ``skip``, run it
        record by record to drop only the offending ones."""
        try:
            self.hook.mmstore_prepare_records(collection=self.col.context, records=shaped)
            return shaped
        except RecordError:
            if self.on_error == "raise":
                raise
        kept = []
        for record in shaped:
            try:
                one = [record]
                self.hook.mmstore_prepare_records(collection=self.col.context, records=one)
                kept.extend(one)
            except RecordError as e:
                self._reject(report, e)
        return kept

    def _existing(self, conn: Connection, ids: list[str]) -> dict[str, tuple[str, dict]]:
        """For ids already stored: content hash, and per field its stored vectors (source
        hash, encoder key, vid): normally one, more only if other spaces were left."""
        out: dict[str, tuple[str, dict[str, list[tuple[str, str, int]]]]] = {}
        ids_table = pa.table({"id": pa.array(ids, pa.string())})
        with self.catalog.arrow("mms_chunk_ids", ids_table):
            rows = conn.exec_driver_sql(
                "SELECT r.id, r.content_hash FROM mms_records r JOIN mms_chunk_ids c "
                "ON r.id = c.id WHERE r.collection = ?",
                (self.col.name,),
            ).fetchall()
            if not rows:
                return out
            for rid, content_hash in rows:
                out[rid] = (content_hash, {})
            embs = embeddings.of_records(conn, self.col.name, "mms_chunk_ids")
        for rid, fname, source_hash, key, vid in embs:
            out[rid][1].setdefault(fname, []).append((source_hash, key, vid))
        return out

    def _plan(
        self, changed: list[rec.Prepared], existing: dict[str, tuple[str, dict]]
    ) -> tuple[list[tuple[str, int]], dict[str, list[int]]]:
        """Stored vectors to drop, and per field the positions of records to encode: one
        vector of a field stays when its source and encoder are unchanged; every other
        vector of the record is dropped."""
        drop: list[tuple[str, int]] = []
        todo: dict[str, list[int]] = {name: [] for name in self.col.fields}
        for i, p in enumerate(changed):
            stored = existing.get(p.id, (None, {}))[1]
            for fname, rows in stored.items():
                f = self.col.fields.get(fname)
                kept = False
                for source_hash, key, vid in rows:
                    if f is None or kept or p.hashes.get(fname) != source_hash or key != f.key:
                        drop.append((fname, vid))
                    else:
                        kept = True
                if not kept and fname in p.values:
                    todo[fname].append(i)
            for fname in p.values:
                if fname not in stored:
                    todo[fname].append(i)
        return drop, todo

    def _encode(
        self,
        conn: Connection,
        changed: list[rec.Prepared],
        todo: dict[str, list[int]],
        report: IngestReport,
    ) -> tuple[list[rec.Prepared], dict[str, list[int]], dict[str, np.ndarray]]:
        """Vectors per field for the records to encode. A record whose value the encoder
        turns into an unusable vector is rejected (with ``skip``, dropped from every field
        before anything is written)."""
        out, bad = {}, np.zeros(len(changed), bool)
        for name, rows in todo.items():
            if rows:
                f = self.col.fields[name]
                items = [changed[i].values[name] for i in rows]
                if ensure_fitted(conn, self.col.name, f, items):
                    self.fitted.append(f)
                owners = [changed[i] for i in rows]
                out[name], unusable = self._vectors(f, owners, items, report)
                for j in np.flatnonzero(unusable):
                    bad[rows[j]] = True
                    self._reject(report, unusable_value(f, changed[rows[j]].id))
        if not bad.any():
            return changed, todo, out
        return _without(bad, changed, todo, out)

    def _vectors(
        self, f: Field, owners: list[rec.Prepared], items: list[Any], report: IngestReport
    ) -> tuple[np.ndarray, np.ndarray]:
        """The field's vectors for ``owners``: given ones where they match the value and the
        encoder identity (checked and normalized as encoder output is), the rest encoded."""
        given = [self.given.get((p.id, f.name)) for p in owners]
        hit = np.array(
            [
                g is not None and (g.source_hash, g.encoder_key) == (p.hashes[f.name], f.key)
                for g, p in zip(given, owners, strict=True)
            ],
            bool,
        )
        if not hit.any():
            return self._encode_field(f, items, report)
        vectors = np.zeros((len(owners), f.identity.dim), np.float32)
        bad = np.zeros(len(owners), bool)
        if not hit.all():
            missing = [item for item, h in zip(items, hit, strict=True) if not h]
            vectors[~hit], bad[~hit] = self._encode_field(f, missing, report)
        stacked = np.stack([g.vector for g, h in zip(given, hit, strict=True) if h and g])
        vectors[hit], bad[hit] = checked_rows(f.encoder, f, stacked, int(hit.sum()))
        report.encoded += int(hit.sum())
        return vectors, bad

    def _encode_field(
        self, f: Field, items: list[Any], report: IngestReport
    ) -> tuple[np.ndarray, np.ndarray]:
        parts, masks = [], []
        for start in range(0, len(items), f.encoder.batch_size):
            batch = items[start : start + f.encoder.batch_size]
            t0 = time.perf_counter()
            vectors, bad = encode_rows(self.hook, f, batch)
            parts.append(vectors)
            masks.append(bad)
            self.col.store.track(
                BatchEncoded(
                    str(self.col.store.path),
                    self.col.name,
                    f.name,
                    len(batch),
                    time.perf_counter() - t0,
                )
            )
        report.encoded += len(items)
        if not parts:
            return np.empty((0, f.identity.dim), np.float32), np.zeros(0, bool)
        return np.concatenate(parts), np.concatenate(masks)

    # -- writing ------------------------------------------------------------------------
    def _write(
        self,
        conn: Connection,
        changed: list[rec.Prepared],
        drop: list[tuple[str, int]],
        todo: dict[str, list[int]],
        vectors: dict[str, np.ndarray],
        report: IngestReport,
        rewritten: list[str],
    ) -> None:
        if rewritten:  # their old rows go; new records have none to delete
            table = pa.table({"id": pa.array(rewritten, pa.string())})
            with self.catalog.arrow("mms_chunk_ids", table):
                conn.exec_driver_sql(
                    "DELETE FROM mms_records WHERE collection = ? AND id IN "
                    "(SELECT id FROM mms_chunk_ids)",
                    (self.col.name,),
                )
        if drop:
            embeddings.delete_vids(self.catalog, conn, [v for _, v in drop])
        rev0 = self.catalog.next_ids(conn, "rev", len(changed))
        self._insert_records(changed, rev0, report.run_id)
        for fname, rows in todo.items():
            if rows:
                self._insert_vectors(
                    conn, self.col.fields[fname], [changed[i] for i in rows], vectors[fname]
                )
        self._remember(drop)

    def _insert_records(self, changed: list[rec.Prepared], rev0: int, run_id: int) -> None:
        n, now = len(changed), _now()
        table = pa.table(
            {
                "collection": pa.array([self.col.name] * n, pa.string()),
                "id": pa.array([p.id for p in changed], pa.string()),
                "rev": pa.array(np.arange(rev0, rev0 + n), pa.int64()),
                "content_hash": pa.array([p.content_hash for p in changed], pa.string()),
                "label": pa.array([p.label for p in changed], pa.string()),
                "ts": pa.array([p.ts for p in changed], pa.timestamp("us")),
                "meta": pa.array([p.meta for p in changed], pa.string()),
                "sources": pa.array([p.sources_json for p in changed], pa.string()),
                "run_id": pa.array([run_id] * n, pa.int64()),
                "updated_at": pa.array([now] * n, pa.timestamp("us")),
            }
        )
        with self.catalog.arrow("mms_new_records", table):
            self.catalog.raw.execute("INSERT INTO mms_records SELECT * FROM mms_new_records")
        if self.col.cache.loaded:  # else the cache reads the catalog when first needed
            for p in changed:
                self.pending.rows[p.id] = RecordRow(p.label, p.ts, p.meta, p.sources_json)

    def _insert_vectors(
        self, conn: Connection, f: Field, owners: list[rec.Prepared], vectors: np.ndarray
    ) -> None:
        rows = [(p.id, p.hashes[f.name]) for p in owners]
        vectors = np.ascontiguousarray(vectors, np.float32)
        vids = embeddings.insert(self.catalog, conn, self.col.name, f.name, f.key, rows, vectors)
        self._hold(f.name, vids, vectors)
        if self.col.cache.loaded:
            self.pending.owners.extend(zip(vids.tolist(), (p.id for p in owners), strict=True))

    def _hold(self, name: str, vids: np.ndarray, vectors: np.ndarray) -> None:
        pending = self.pending
        if pending.overflow:
            return
        pending.nbytes += vectors.nbytes
        if pending.nbytes > PENDING_LIMIT_BYTES:
            pending.overflow, pending.added = True, {}
            return
        pending.added.setdefault(name, []).append((vids, vectors))

    def _remember(self, drop: list[tuple[str, int]]) -> None:
        for fname, vid in drop:
            self.pending.removed.setdefault(fname, []).append(np.array([vid], np.int64))
            self.pending.removed_owner_vids.append(vid)

    # -- after the commit ---------------------------------------------------------------
    def _after_commit(self) -> None:
        p, fields = self.pending, self.col.fields
        change = Change(rows=p.rows, owners=p.owners, gone=p.removed_owner_vids, save=fields)
        change.removed = {n: np.concatenate(vids) for n, vids in p.removed.items()}
        if p.overflow:
            change.reload = list(fields.values())
        for name, added in p.added.items():
            vids, vectors = (np.concatenate(parts) for parts in zip(*added, strict=True))
            change.added.append((fields[name], vids, vectors))
        after_commit(self.col.indexes, self.col.cache, change)


def check_run_options(on_error: str, size_name: str, size: int) -> None:
    """The options every batch job takes: how to treat bad records, and a batch size."""
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"{size_name} must be a positive int, got {size!r}")


def _without(
    bad: np.ndarray,
    changed: list[rec.Prepared],
    todo: dict[str, list[int]],
    vectors: dict[str, np.ndarray],
) -> tuple[list[rec.Prepared], dict[str, list[int]], dict[str, np.ndarray]]:
    """The records, per-field positions and vectors with the ``bad`` records removed."""
    new_pos = np.cumsum(~bad) - 1
    kept_todo, kept_vectors = {}, {}
    for name, rows in todo.items():
        keep = [j for j, i in enumerate(rows) if not bad[i]]
        kept_todo[name] = [int(new_pos[rows[j]]) for j in keep]
        if name in vectors:
            kept_vectors[name] = vectors[name][keep]
    return [p for p, b in zip(changed, bad, strict=True) if not b], kept_todo, kept_vectors


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(enabled: bool, name: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(desc=f"ingest {name}", unit="rec")


def iter_ids(ids: Any) -> Iterator[str]:
    """Ids given as one id or an iterable of them, as strings."""
    if isinstance(ids, str | int):
        ids = [ids]
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, str | int):
            raise InvalidInputError(f"ids are strings or ints, got {i!r}")
        yield str(i)
