"""Ingest: validate records, skip unchanged ones, encode what changed in batches, and write
records and vectors to the catalog in bulk through Arrow, all in one transaction per call.
Indexes and the hit cache follow only after the commit."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from sqlalchemy.engine import Connection

from mmstore.encoding.encode import checked_rows, encode_rows, load_values, unusable_value
from mmstore.encoding.fields import Field
from mmstore.encoding.fitted import ensure_fitted
from mmstore.errors import RecordError
from mmstore.index.choose import budget
from mmstore.index.commit import after_commit
from mmstore.index.hitcache import RecordRow
from mmstore.ingest import columns, sources, writes
from mmstore.ingest import records as rec
from mmstore.ingest.changes import Stored, missing_vectors, plan_vectors, without
from mmstore.ingest.pending import Pending
from mmstore.ingest.report import (
    GivenVector,
    IngestReport,
    OnError,
    Rejected,
    check_run_options,
    progress_bar,
)
from mmstore.plugin.events import BatchEncoded, IngestCommitted, IngestFinished
from mmstore.storage import embeddings

if TYPE_CHECKING:
    from mmstore.state import CollectionState

log = logging.getLogger(__name__)


class Ingestor:
    """Runs one ``ingest`` call for a collection."""

    def __init__(
        self,
        col: CollectionState,
        on_error: OnError,
        progress: bool,
        chunk_size: int,
        given: Mapping[tuple[str, str], GivenVector] | None = None,
    ) -> None:
        check_run_options(on_error, "chunk_size", chunk_size)
        self.col, self.on_error = col, on_error
        self.progress, self.chunk_size = progress, chunk_size
        self.catalog = col.store.catalog
        self.hook = col.store.plugins.hook
        self.pending = Pending(limit=budget(col.config.index))  # the index holds them next
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
        started = writes.now()
        with self.catalog.lock:  # held until the in-memory indexes agree with the commit
            try:
                report = self._transaction(source, started)
            except BaseException as error:
                for f in self.fitted:
                    f.encoder.load_state(None)
                writes.record_failure(self.catalog, self.col.name, started, error)
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
        action = f"ingest into collection {self.col.name!r}"
        with self.catalog.transaction(action) as conn, self.col.store.media.written_by_call():
            report = IngestReport(writes.start_run(self.catalog, conn, self.col.name, started))
            bar = progress_bar(self.progress, f"ingest {self.col.name}")
            for chunk in sources.batches(source, self.chunk_size):
                self._chunk(conn, chunk, report)
                bar.update(len(chunk))
            bar.close()
            self.col.store.media.sync()  # blobs on disk before the records naming them
            writes.finish_run(conn, report)
        return report

    # -- one chunk ----------------------------------------------------------------------
    def _chunk(
        self, conn: Connection, chunk: list[Any] | pa.RecordBatch, report: IngestReport
    ) -> None:
        offset = report.received
        report.received += len(chunk)
        prepared = self._prepare(chunk, offset, report)
        if not prepared:
            return
        existing = self._existing(conn, [p.id for p in prepared])
        changed = [p for p in prepared if existing.get(p.id, (None, {}))[0] != p.content_hash]
        report.unchanged += len(prepared) - len(changed)
        changed = self._keeping_missing(changed, existing, report)
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
        changed = self._keeping_missing(changed, existing, report)
        needed: list[list[str]] = [[] for _ in changed]
        for name, rows in self._plan(changed, existing)[1].items():
            for i in rows:
                needed[i].append(name)
        return list(zip(changed, needed, strict=True))

    def _reject(self, report: IngestReport, error: RecordError) -> None:
        if self.on_error == "raise":
            raise error
        report.rejected.append(Rejected(str(error.record_id), error.field, error.problem))

    def _prepare(
        self, chunk: list[Any] | pa.RecordBatch, offset: int, report: IngestReport
    ) -> list[rec.Prepared]:
        if isinstance(chunk, pa.RecordBatch):  # the columnar path, where the batch can take it
            prep = columns.BatchPrep(self.col, self.hook, self.seen, partial(self._reject, report))
            columnar = prep.prepare(chunk, offset, skip=self.on_error == "skip")
            if columnar is not None:
                return self._finish(columnar)
            chunk = sources.batch_records(chunk)
        shaped: list[dict[str, Any]] = []
        for position, raw in enumerate(chunk, start=offset):
            try:
                rid = rec.record_id(raw, position)
                if rid in self.seen:
                    raise rec.duplicate(rid)
                self.seen.add(rid)
                self._check_missing(rid, raw)
                rec.check_keys(rid, raw, self.col.fields)
                shaped.append({**raw, "id": rid})
            except RecordError as e:
                self._reject(report, e)
        shaped = self._preprocess(shaped, report)
        prepared: list[rec.Prepared | None] = [self._standard(raw, report) for raw in shaped]
        for f in self.col.fields.values():
            self._load_field(f, shaped, prepared, report)
        return self._finish([p for p in prepared if p is not None])

    def _finish(self, kept: list[rec.Prepared]) -> list[rec.Prepared]:
        # sources last: a modality may write media in to_source, so only records that
        # passed every field get there (a rejected record leaves no blob behind)
        for p in kept:
            for name, value in p.values.items():
                p.sources[name] = self.col.fields[name].modality.to_source(value)
        return [p.finish() for p in kept]

    def _check_missing(self, rid: str, raw: Mapping[str, Any]) -> None:
        """A value for a field whose plugin is not installed names what to install."""
        for name, missing in self.col.missing.items():
            if raw.get(name) is not None:
                raise RecordError(rid, name, missing.install)

    def _keeping_missing(
        self, changed: list[rec.Prepared], existing: Stored, report: IngestReport
    ) -> list[rec.Prepared]:
        """The changed records, less those whose update would drop a vector of a field
        whose plugin is missing (each refused by name)."""
        kept = []
        for p in changed:
            error = missing_vectors(p.id, existing, self.col.missing)
            if error is None:
                kept.append(p)
            else:
                self._reject(report, error)
        return kept

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

    def _existing(self, conn: Connection, ids: list[str]) -> Stored:
        return writes.stored(self.catalog, conn, self.col.name, ids)

    def _plan(
        self, changed: list[rec.Prepared], existing: Stored
    ) -> tuple[list[tuple[str, int]], dict[str, list[int]]]:
        return plan_vectors(self.col.fields, changed, existing)

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
        return without(bad, changed, todo, out)

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
            writes.delete_records(self.catalog, conn, self.col.name, rewritten)
        if drop:
            embeddings.delete_vids(self.catalog, conn, [v for _, v in drop])
        rev0 = self.catalog.next_ids(conn, "rev", len(changed))
        self._insert_records(changed, rev0, report.run_id)
        for fname, rows in todo.items():
            if rows:
                self._insert_vectors(
                    conn, self.col.fields[fname], [changed[i] for i in rows], vectors[fname]
                )
        self.pending.remember(drop)

    def _insert_records(self, changed: list[rec.Prepared], rev0: int, run_id: int) -> None:
        writes.insert_records(self.catalog, self.col.name, changed, rev0, run_id)
        if self.col.cache.loaded:  # else the cache reads the catalog when first needed
            for p in changed:
                self.pending.rows[p.id] = RecordRow(p.label, p.ts, p.meta, p.sources_json)

    def _insert_vectors(
        self, conn: Connection, f: Field, owners: list[rec.Prepared], vectors: np.ndarray
    ) -> None:
        rows = [(p.id, p.hashes[f.name]) for p in owners]
        vectors = np.ascontiguousarray(vectors, np.float32)
        vids = embeddings.insert(self.catalog, conn, self.col.name, f.name, f.key, rows, vectors)
        self.pending.hold(f.name, vids, vectors)
        if self.col.cache.loaded:
            self.pending.owners.extend(zip(vids.tolist(), (p.id for p in owners), strict=True))

    # -- after the commit ---------------------------------------------------------------
    def _after_commit(self) -> None:
        change = self.pending.change(self.col.fields)
        after_commit(self.col.indexes, self.col.cache, change)
