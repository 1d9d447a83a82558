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

from mmstore.config import CollectionConfig, parse_field_spec
from mmstore.encoding.encode import encode_rows, stored_value, unusable_value
from mmstore.encoding.fields import Field, build_field, record_identity
from mmstore.encoding.fitted import ensure_fitted
from mmstore.errors import InvalidInputError, RecordError, UnknownNameError
from mmstore.index.commit import Change, after_commit
from mmstore.ingest.report import Rejected, check_run_options, progress_bar
from mmstore.plugin.events import FieldSwitched, ReembedProgress
from mmstore.storage import embeddings, schema

if TYPE_CHECKING:
    from mmstore.state import CollectionState

#: where re-embedding encodes: in this process, or on Ray encoder actors
ENGINES = ("local", "ray")


@dataclass
class ReembedReport:
    """What one ``reembed`` call did."""

    field: str
    old_key: str
    new_key: str
    encoded: int = 0
    already: int = 0
    switched: bool = False
    #: vectors of other encoder identities deleted at the switch (or by a cancel)
    dropped: int = 0
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

    def __init__(
        self,
        col: CollectionState,
        batch_size: int,
        on_error: str,
        progress: bool,
        engine: str = "local",
        address: str | None = None,
    ) -> None:
        check_run_options(on_error, "batch_size", batch_size)
        self.col, self.batch_size, self.on_error, self.progress = (
            col,
            batch_size,
            on_error,
            progress,
        )
        self.engine, self.address = engine, address
        self.catalog = col.store.catalog

    def run(self, name: str, encoder: Mapping[str, Any] | str | None) -> ReembedReport:
        start = time.perf_counter()
        if name not in self.col.fields:
            raise self.col.no_field(name, self.col.fields)
        if self.engine not in ENGINES:
            raise UnknownNameError("engine", self.engine, ENGINES)
        if encoder is not None:
            self._configure(name, encoder)
        new, old = self.col.fields[name], self.col.active[name]
        report = ReembedReport(name, old.key, new.key)
        if new.key == old.key:  # nothing pending; drop what a cancelled one left behind
            self._commit_switch(new, report)
        else:
            with self.catalog.transaction() as conn:
                record_identity(conn, new.identity)
            self.col.indexes.filling.add((name, new.key))
            self._fill(new, old, report)
            if not report.rejected:
                self._switch(new, report)
            elif self.on_error == "skip":
                self._refuse_empty(new, report)
                self._switch(new, report)
        report.seconds = time.perf_counter() - start
        return report

    def _refuse_empty(self, new: Field, report: ReembedReport) -> None:
        """A switch that would leave the field with no vector at all is refused."""
        if report.encoded + report.already == 0:
            first = report.rejected[0]
            raise InvalidInputError(
                f"no record of field {new.name!r} could be re-embedded ({len(report.rejected)} "
                f"rejected; first: {first.id}: {first.reason}); nothing was switched, and the "
                "old space keeps serving"
            )

    def _configure(self, name: str, encoder: Mapping[str, Any] | str) -> None:
        """Store the field's new encoder configuration, keeping the configuration of the
        space that serves searches until the switch."""
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
        serving = dict(col.config.serving)
        if built.key == col.active[name].key:
            serving.pop(name, None)  # back to the serving configuration: a cancel
        elif name not in serving and not col.pending(name):
            serving[name] = old_spec
        config = col.config.model_copy(
            update={"fields": {**col.config.fields, name: spec}, "serving": serving}
        )
        self._store_config(config)
        col.fields = {**col.fields, name: built}
        col.refresh_active()

    def _store_config(self, config: CollectionConfig, conn: Any = None) -> None:
        t = schema.collections
        stmt = t.update().where(t.c.name == self.col.name).values(config=config.model_dump_json())
        if conn is not None:
            conn.execute(stmt)
        else:
            with self.catalog.transaction() as c:
                c.execute(stmt)
        self.col.config = config

    # -- filling the new space ----------------------------------------------------------
    def _todo(self, new: Field, old: Field) -> tuple[list[str], list[str], int]:
        """Records with a vector in the old space and none yet in the new one (ids and
        source hashes), and how many already have one."""
        t = embeddings.pending_in_space(self.catalog, self.col.name, new.name, old.key, new.key)
        done = np.asarray(t.column("done").to_numpy(zero_copy_only=False), bool)
        ids = np.asarray(t.column("record_id").to_pylist(), object)
        hashes = np.asarray(t.column("source_hash").to_pylist(), object)
        return list(ids[~done]), list(hashes[~done]), int(done.sum())

    def _fill(self, new: Field, old: Field, report: ReembedReport) -> None:
        ids, hashes, report.already = self._todo(new, old)
        if self.engine == "ray" and not new.encoder.fitted:  # fitting needs every batch here
            from mmstore.ingest.on_ray import reembed_on_ray

            reembed_on_ray(self, new, ids, hashes, report)
            return
        total = len(ids) + report.already
        bar = progress_bar(
            self.progress, f"reembed {self.col.name}.{new.name}", total, report.already
        )
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
        """Encode one batch from its stored sources (outside any transaction, so catalog
        readers do not wait for the encoder), then commit it."""
        items, kept = self._items(new, ids, hashes, report)
        if not kept:
            return
        hook = self.col.store.plugins.hook
        if new.encoder.fitted and new.encoder.state is None:
            with self.catalog.transaction() as conn:
                ensure_fitted(conn, self.col.name, new, items)
        step = new.encoder.batch_size
        parts = [encode_rows(hook, new, items[i : i + step]) for i in range(0, len(items), step)]
        vectors = np.concatenate([v for v, _ in parts])
        bad = np.concatenate([b for _, b in parts])
        self.commit(new, kept, vectors, bad, report)

    def commit(
        self,
        new: Field,
        kept: list[tuple[str, str]],
        vectors: np.ndarray,
        bad: np.ndarray,
        report: ReembedReport,
    ) -> None:
        """Commit one batch's checked vectors of (record id, source hash) pairs ``kept``,
        in its own transaction; ``bad`` marks unusable rows, rejected first."""
        if bad.any():
            vectors, kept = self._reject_unusable(new, kept, vectors, bad, report)
            if not kept:
                return
        with self.catalog.lock:  # held until the in-memory indexes agree with the commit
            with self.catalog.transaction() as conn:
                vids = embeddings.insert(
                    self.catalog, conn, self.col.name, new.name, new.key, kept, vectors
                )
            owners = list(zip(vids.tolist(), (rid for rid, _ in kept), strict=True))
            change = Change(added=[(new, vids, vectors)], owners=owners)
            after_commit(self.col.indexes, self.col.cache, change)
        report.encoded += len(kept)

    def _reject_unusable(
        self,
        new: Field,
        kept: list[tuple[str, str]],
        vectors: np.ndarray,
        bad: np.ndarray,
        report: ReembedReport,
    ) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """Records whose stored value the new encoder turns into an unusable vector."""
        for j in np.flatnonzero(bad):
            error = unusable_value(new, kept[j][0])
            report.rejected.append(Rejected(kept[j][0], new.name, error.problem))
            if self.on_error == "raise":
                raise error
        return vectors[~bad], [k for k, b in zip(kept, bad, strict=True) if not b]

    def sources(self, new: Field, ids: list[str]) -> dict[str, Any]:
        """Each record's stored source of the field (None where it kept none)."""
        table = pa.table({"id": pa.array(ids, pa.string())})
        with self.catalog.arrow("mms_reembed_ids", table):
            rows = self.catalog.query_arrow(
                "SELECT id, sources FROM mms_records WHERE collection = ? AND id IN "
                "(SELECT id FROM mms_reembed_ids)",
                [self.col.name],
            ).to_pylist()
        return {r["id"]: json.loads(r["sources"]).get(new.name) for r in rows}

    def _items(
        self, new: Field, ids: list[str], hashes: list[str], report: ReembedReport
    ) -> tuple[list[Any], list[tuple[str, str]]]:
        """Each record's stored source, rebuilt into what the new encoder takes."""
        sources = self.sources(new, ids)
        items: list[Any] = []
        kept: list[tuple[str, str]] = []
        for rid, source_hash in zip(ids, hashes, strict=True):
            try:
                items.append(stored_value(new, rid, sources.get(rid)))
                kept.append((rid, source_hash))
            except RecordError as e:
                report.rejected.append(Rejected(rid, new.name, e.problem))
                if self.on_error == "raise":
                    raise
        return items, kept

    # -- the switch ---------------------------------------------------------------------
    def _switch(self, new: Field, report: ReembedReport) -> None:
        """The field serves its new space from now on (see :meth:`_commit_switch`)."""
        self._commit_switch(new, report)
        report.switched = True
        col = self.col
        col.indexes.get(new)
        col.indexes.save(new)
        col.store.track(
            FieldSwitched(
                str(col.store.path),
                col.name,
                new.name,
                report.old_key,
                new.key,
                col.indexes.get(new).live,
            )
        )

    def _commit_switch(self, new: Field, report: ReembedReport) -> None:
        """In one transaction: the field's active key becomes ``new``'s, the vectors and
        fitted states of every other encoder identity of the field are deleted (the old
        space, and any space a cancelled or redirected re-embedding began), and the kept
        serving configuration is dropped. Then the in-memory state follows."""
        col, f = self.col, schema.fields
        states = schema.encoder_states
        config = col.config.model_copy(
            update={"serving": {k: v for k, v in col.config.serving.items() if k != new.name}}
        )
        with self.catalog.lock:  # held until the in-memory state agrees with the commit
            with self.catalog.transaction() as conn:
                gone = embeddings.delete_other_spaces(conn, col.name, new.name, new.key)
                conn.execute(
                    f.update()
                    .where(f.c.collection == col.name, f.c.field == new.name)
                    .values(encoder_key=new.key)
                )
                conn.execute(
                    states.delete().where(
                        states.c.collection == col.name,
                        states.c.field == new.name,
                        states.c.encoder_key != new.key,
                    )
                )
                self._store_config(config, conn)
            report.dropped = len(gone)
            col.indexes.filling.discard((new.name, new.key))
            col.active = {**col.active, new.name: new}
            dropped = [(new.name, key) for key in sorted({k for _, k in gone})]
            after_commit(col.indexes, col.cache, Change(dropped=dropped, gone=[v for v, _ in gone]))
