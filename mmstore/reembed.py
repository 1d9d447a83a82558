"""Re-embedding: fill a field's new encoder space from the sources stored in the catalog
(inline text, content-addressed media), batch by batch, each batch its own transaction, so
that an interrupted call resumes where it stopped; then switch the field to the new space
in one transaction and drop the old vectors. Until the switch, searches use the old space.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mmstore import schema
from mmstore.config import CollectionConfig, parse_field_spec
from mmstore.errors import InvalidInputError, MMStoreError, RecordError, UnknownNameError
from mmstore.events import FieldSwitched, ReembedProgress
from mmstore.fields import Field, build_field, record_identity
from mmstore.fitting import ensure_fitted
from mmstore.ingest import Rejected, encode_batch

if TYPE_CHECKING:
    from mmstore.collection import Collection


@dataclass
class ReembedReport:
    """What one ``reembed`` call did."""

    field: str
    old_key: str
    new_key: str
    encoded: int = 0
    already: int = 0
    switched: bool = False
    rejected: list[Rejected] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        state = "switched to" if self.switched else "not yet switched to"
        return (
            f"reembed {self.field}: {self.encoded} encoded now, {self.already} done before, "
            f"{len(self.rejected)} rejected; {state} {self.new_key} in {self.seconds:.2f}s"
        )


class Reembedder:
    """Runs one ``reembed`` call for a collection's field."""

    def __init__(self, col: Collection, batch_size: int, on_error: str, progress: bool) -> None:
        if on_error not in ("raise", "skip"):
            raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
        self.col, self.batch_size, self.on_error, self.progress = (
            col,
            batch_size,
            on_error,
            progress,
        )
        self.catalog = col.store.catalog

    def run(self, name: str, encoder: Mapping[str, Any] | str | None) -> ReembedReport:
        start = time.perf_counter()
        if name not in self.col.fields:
            raise UnknownNameError("field", name, self.col.fields)
        if encoder is not None:
            self._configure(name, encoder)
        new, old = self.col.fields[name], self.col.active[name]
        report = ReembedReport(name, old.key, new.key)
        if new.key != old.key:
            with self.catalog.transaction() as conn:
                record_identity(conn, new.identity)
            self.col.indexes.filling.add((name, new.key))
            self._fill(new, old, report)
            if not report.rejected or self.on_error == "skip":
                self._switch(new, old, report)
        report.seconds = time.perf_counter() - start
        return report

    def _configure(self, name: str, encoder: Mapping[str, Any] | str) -> None:
        """Store the field's new encoder configuration (the old space keeps serving)."""
        col = self.col
        old_spec = col.config.fields[name]
        if isinstance(encoder, str):
            encoder = {"encoder": encoder}
        spec = parse_field_spec(name, {"modality": old_spec.modality, **encoder})
        if spec.modality != old_spec.modality:
            raise InvalidInputError(
                f"field {name!r} holds {old_spec.modality}; a re-embedding keeps the modality"
            )
        built = build_field(name, spec, col.store.plugins, col.store.media, col.config.options)
        config = CollectionConfig(
            fields={**col.config.fields, name: spec},
            options=col.config.options,
            index=col.config.index,
        )
        t = schema.collections
        with self.catalog.transaction() as conn:
            conn.execute(
                t.update().where(t.c.name == col.name).values(config=config.model_dump_json())
            )
        col.config = config
        col.fields = {**col.fields, name: built}
        col.refresh_active()

    # -- filling the new space ----------------------------------------------------------
    def _todo(self, new: Field, old: Field) -> tuple[list[str], list[str], int]:
        """Records with a vector in the old space and none yet in the new one (ids and
        source hashes), and how many already have one."""
        t = self.catalog.query_arrow(
            "SELECT o.record_id, o.source_hash, n.vid IS NOT NULL AS done "
            "FROM mms_embeddings o LEFT JOIN mms_embeddings n ON n.collection = o.collection "
            "AND n.record_id = o.record_id AND n.field = o.field AND n.encoder_key = ? "
            "WHERE o.collection = ? AND o.field = ? AND o.encoder_key = ? ORDER BY o.record_id",
            [new.key, self.col.name, new.name, old.key],
        )
        done = np.asarray(t.column("done").to_numpy(zero_copy_only=False), bool)
        ids = np.asarray(t.column("record_id").to_pylist(), object)
        hashes = np.asarray(t.column("source_hash").to_pylist(), object)
        return list(ids[~done]), list(hashes[~done]), int(done.sum())

    def _fill(self, new: Field, old: Field, report: ReembedReport) -> None:
        ids, hashes, report.already = self._todo(new, old)
        total = len(ids) + report.already
        bar = _bar(self.progress, f"reembed {self.col.name}.{new.name}", total, report.already)
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            self._batch(new, batch, hashes[start : start + self.batch_size], report)
            bar.update(len(batch))
            self.col.store.track(
                ReembedProgress(
                    str(self.col.store.path),
                    self.col.name,
                    new.name,
                    report.already + report.encoded,
                    total,
                )
            )
        bar.close()

    def _batch(self, new: Field, ids: list[str], hashes: list[str], report: ReembedReport) -> None:
        """Encode one batch from its stored sources and commit it."""
        items, kept = self._items(new, ids, hashes, report)
        if not kept:
            return
        hook = self.col.store.plugins.hook
        with self.catalog.transaction() as conn:
            fitted = ensure_fitted(conn, self.col.name, new, items)
            try:
                step = new.encoder.batch_size
                vectors = np.concatenate(
                    [
                        encode_batch(hook, new, items[i : i + step])
                        for i in range(0, len(items), step)
                    ]
                )
                vids = self._insert(conn, new, kept, vectors)
            except BaseException:
                if fitted:
                    new.encoder.load_state(None)
                raise
        report.encoded += len(kept)
        self.col.indexes.apply(new, (vids, vectors), np.empty(0, np.int64))
        owners = zip(vids.tolist(), (rid for rid, _ in kept), strict=True)
        self.col.cache.apply({}, owners, (), ())

    def _items(
        self, new: Field, ids: list[str], hashes: list[str], report: ReembedReport
    ) -> tuple[list[Any], list[tuple[str, str]]]:
        """Each record's stored source, rebuilt into what the new encoder takes."""
        table = pa.table({"id": pa.array(ids, pa.string())})
        with self.catalog.arrow("mms_reembed_ids", table):
            rows = self.catalog.query_arrow(
                "SELECT id, sources FROM mms_records WHERE collection = ? AND id IN "
                "(SELECT id FROM mms_reembed_ids)",
                [self.col.name],
            ).to_pylist()
        sources = {r["id"]: json.loads(r["sources"]).get(new.name) for r in rows}
        items: list[Any] = []
        kept: list[tuple[str, str]] = []
        for rid, source_hash in zip(ids, hashes, strict=True):
            try:
                items.append(self._item(new, rid, sources.get(rid)))
                kept.append((rid, source_hash))
            except RecordError as e:
                report.rejected.append(Rejected(rid, new.name, e.problem))
                if self.on_error == "raise":
                    raise
        return items, kept

    @staticmethod
    def _item(new: Field, rid: str, source: Any) -> Any:
        if source is None:
            raise RecordError(
                rid,
                new.name,
                f"has a vector but no stored source to re-embed (modality {new.modality.name!r} "
                "keeps only the vector); ingest the originals into a collection with the new "
                "encoder instead",
            )
        try:
            value = new.modality.from_source(source)
        except RecordError:
            raise
        except MMStoreError as e:
            raise RecordError(rid, new.name, str(e)) from e
        try:
            new.encoder.check(value)
        except ValueError as e:
            raise RecordError(rid, new.name, str(e)) from e
        return value

    def _insert(
        self, conn: Any, new: Field, kept: list[tuple[str, str]], vectors: np.ndarray
    ) -> np.ndarray:
        n = len(kept)
        vid0 = self.catalog.next_ids(conn, "vid", n)
        vids = np.arange(vid0, vid0 + n, dtype=np.int64)
        blob = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(new.identity.dim * 4), n, [None, pa.py_buffer(vectors)]
        )
        table = pa.table(
            {
                "vid": pa.array(vids, pa.int64()),
                "collection": pa.array([self.col.name] * n, pa.string()),
                "record_id": pa.array([rid for rid, _ in kept], pa.string()),
                "field": pa.array([new.name] * n, pa.string()),
                "encoder_key": pa.array([new.key] * n, pa.string()),
                "source_hash": pa.array([h for _, h in kept], pa.string()),
                "vector": blob,
            }
        )
        with self.catalog.arrow("mms_reembed_vectors", table):
            self.catalog.raw.execute(
                "INSERT INTO mms_embeddings SELECT vid, collection, record_id, field, "
                "encoder_key, source_hash, vector::BLOB FROM mms_reembed_vectors"
            )
        return vids

    # -- the switch ---------------------------------------------------------------------
    def _switch(self, new: Field, old: Field, report: ReembedReport) -> None:
        """In one transaction: the field's active key becomes the new one and the old
        vectors are deleted. The new index is saved after; the old one is dropped."""
        col, f = self.col, schema.fields
        with self.catalog.transaction() as conn:
            gone = conn.exec_driver_sql(
                "DELETE FROM mms_embeddings WHERE collection = ? AND field = ? "
                "AND encoder_key = ? RETURNING vid",
                (col.name, new.name, old.key),
            ).fetchall()
            conn.execute(
                f.update()
                .where(f.c.collection == col.name, f.c.field == new.name)
                .values(encoder_key=new.key)
            )
            conn.execute(
                schema.encoder_states.delete().where(
                    schema.encoder_states.c.collection == col.name,
                    schema.encoder_states.c.field == new.name,
                    schema.encoder_states.c.encoder_key == old.key,
                )
            )
        report.switched = True
        col.indexes.forget(new.name, old.key)
        col.active = {**col.active, new.name: new}
        col.cache.apply({}, (), (v for (v,) in gone), ())
        col.searcher.forget_vid_maps()
        col.indexes.get(new)
        col.indexes.save(new)
        vectors = col.indexes.get(new).live
        col.store.track(
            FieldSwitched(str(col.store.path), col.name, new.name, old.key, new.key, vectors)
        )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(enabled: bool, desc: str, total: int, initial: int) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(desc=desc, total=total, initial=initial, unit="rec")
