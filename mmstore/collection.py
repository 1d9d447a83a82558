"""A collection: the records of one schema of fields. A facade over ingest, search, the
indexes and the catalog; it delegates and does not grow features of its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mmstore.config import CollectionConfig, CollectionContext
from mmstore.encoding.fields import Field, describe
from mmstore.errors import DamagedVectorsError
from mmstore.hits import Hits
from mmstore.index.collection import CollectionIndexes
from mmstore.index.commit import Change, after_commit
from mmstore.index.hitcache import HitCache
from mmstore.ingest.ingestor import Ingestor
from mmstore.ingest.reembed import Reembedder, ReembedReport
from mmstore.ingest.report import IngestReport, OnError, iter_ids
from mmstore.ingest.sources import DEFAULT_CHUNK
from mmstore.plugin.events import RecordsDeleted
from mmstore.search.searcher import Fusion, Searcher
from mmstore.state import CollectionState, StoreHandles
from mmstore.storage import embeddings
from mmstore.storage import records as record_rows

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from mmstore.datasets.aligned import AlignedDataset
    from mmstore.heads import HeadReport
    from mmstore.store import Store


class Collection:
    """Records with fields, their vectors and indexes. Get one from a :class:`Store`."""

    def __init__(self, store: Store, name: str, config: CollectionConfig) -> None:
        self.store = store
        handles = StoreHandles(
            store.path, store.catalog, store.plugins, store.media, store.track, store.check_open
        )
        self.state = CollectionState(handles, name, config)
        self.searcher = Searcher(self.state)

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def config(self) -> CollectionConfig:
        return self.state.config

    @property
    def fields(self) -> Mapping[str, Field]:
        """Each field as configured (the encoder a re-embedding fills)."""
        return self.state.fields

    @property
    def active(self) -> Mapping[str, Field]:
        """Each field as it serves searches (the encoder that wrote its stored vectors)."""
        return self.state.active

    @property
    def context(self) -> CollectionContext:
        return self.state.context

    @property
    def indexes(self) -> CollectionIndexes:
        return self.state.indexes

    @property
    def cache(self) -> HitCache:
        return self.state.cache

    def pending(self, name: str) -> bool:
        """Whether the field's configured encoder differs from the one serving it."""
        return self.state.pending(name)

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} fields={sorted(self.fields)}>"

    def ingest(
        self,
        records: Any,
        *,
        on_error: OnError = "raise",
        progress: bool = False,
        chunk_size: int = DEFAULT_CHUNK,
        engine: str = "local",
        address: str | None = None,
    ) -> IngestReport:
        """Insert or update records by id; unchanged records are not re-encoded.

        ``records``: a dict, a list or iterable of dicts, an Arrow table, batch or reader,
        a pandas frame, or a Parquet file (a ``.parquet`` path or ``pq.ParquetFile``, read
        in batches of ``chunk_size``). Arrow batches of plain columns are checked column
        by column (docs/scaling.md).
        With ``on_error="raise"`` the first bad record fails the call and nothing of it is
        written; with ``"skip"`` bad records are left out and listed in the report.
        ``engine="ray"`` encodes on Ray encoder actors (at ``address``, or the cluster
        already initialized) and commits chunk by chunk; it also takes a Ray Dataset or a
        file or folder path (docs/distributed.md).
        """
        self.store.check_writable()
        if engine == "local":
            return Ingestor(self.state, on_error, progress, chunk_size).run(records)
        from mmstore.ingest import on_ray as ray_ingest

        ray_ingest.check_engine(engine)
        return ray_ingest.ingest_on_ray(
            self.state,
            records,
            on_error=on_error,
            progress=progress,
            chunk_size=chunk_size,
            address=address,
        )

    def search(
        self,
        *,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        vector: Any = None,
        record: str | int | None = None,
        fusion: Fusion = "rrf",
        weights: Mapping[str, float] | None = None,
        head: str | None = None,
        **values: Any,
    ) -> Hits:
        """Nearest records to a query, best first.

        Query with field or modality values (``text="red shoe"``), a raw ``vector``, or a
        stored ``record`` id (itself excluded); ``target`` names the field searched;
        ``where`` is a structured filter (:mod:`mmstore.storage.filters`). Several queries fuse by
        reciprocal rank (``fusion="rrf"``) or weighted scores (``"weighted"``).
        ``head`` names a retrieval head that bridges the query field's space to the
        target's (``col.search(audio=..., target="image", head="a2i")``).
        """
        self.store.check_open()
        with self.store.catalog.snapshot():  # the indexes and the catalog at one commit
            return self.searcher.search(
                target=target,
                k=k,
                where=where,
                vector=vector,
                record=record,
                fusion=fusion,
                weights=weights,
                values=values,
                head=head,
            )

    def search_many(
        self,
        vectors: Any = None,
        *,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> list[Hits]:
        """Nearest records to each of a batch of queries, in the order given: ``vectors``
        (an array of shape ``(queries, dim)``) or one field's values as a list
        (``text=["red shoe", "blue hat"]``). The batch is encoded in one call and searched
        in one index call, several times faster than a loop of :meth:`search`."""
        self.store.check_open()
        with self.store.catalog.snapshot():
            return self.searcher.search_many(
                target=target, k=k, where=where, vectors=vectors, values=values
            )

    def get(self, ids: str | int | Iterable[str | int]) -> list[dict[str, Any]]:
        """Records by id, in the order asked; raises NotFoundError naming missing ids."""
        self.store.check_open()
        with self.store.catalog.reading() as conn:
            return record_rows.require(conn, self.name, list(iter_ids(ids)))

    def delete(self, ids: str | int | Iterable[str | int]) -> int:
        """Delete records by id (absent ids are ignored); return how many were deleted."""
        self.store.check_writable()
        wanted = pa.table({"id": pa.array(list(iter_ids(ids)), pa.string())})
        catalog = self.store.catalog
        action = f"delete from collection {self.name!r}"
        with catalog.lock:  # held until the in-memory indexes agree with the commit
            with catalog.transaction(action) as conn, catalog.arrow("mms_delete_ids", wanted):
                gone, deleted = self._delete_rows(conn)
            removed = {n: np.array([v for v, f in gone if f == n], np.int64) for n in self.fields}
            change = Change(removed=removed, deleted=deleted, gone=[v for v, _ in gone])
            after_commit(self.indexes, self.cache, change)
        if deleted:
            self.store.track(RecordsDeleted(str(self.store.path), self.name, tuple(deleted)))
        return len(deleted)

    def _delete_rows(self, conn: Connection) -> tuple[list[Any], list[str]]:
        """Delete the records named in ``mms_delete_ids`` and their vectors; return the
        (vid, field) pairs and the record ids that went."""
        gone = embeddings.delete_records(conn, self.name, "mms_delete_ids")
        return gone, record_rows.delete_listed(conn, self.name, "mms_delete_ids")

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        """How many records (matching ``where``, when given)."""
        self.store.check_open()
        with self.store.catalog.reading() as conn:
            return record_rows.count(conn, self.name, where)

    def __len__(self) -> int:
        return self.count()

    def dataset(
        self,
        inputs: Sequence[str],
        label: str | None = "label",
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str | int] | None = None,
    ) -> AlignedDataset:
        """The stored vectors of ``inputs`` (field or modality names) row-aligned by record
        id, sorted, with a mask per field where a record lacks one
        (:mod:`mmstore.datasets.aligned`); ``label`` is ``"label"`` or a metadata key;
        ``where`` filters, ``ids`` restricts."""
        from mmstore.datasets.aligned import build_dataset  # torch loads only when asked for

        return build_dataset(self.state, inputs, label, where, ids)

    def spaces(self) -> list[dict[str, Any]]:
        """Per field: the encoder identity that serves searches, the configured one when a
        re-embedding is pending, and how many stored vectors each encoder identity wrote."""
        counts = embeddings.counts_by_encoder(self.store.catalog, self.name)
        out = []
        for name, f in self.active.items():
            row = describe(f)
            row["state"] = "reembedding" if self.pending(name) else "current"
            row["pending"] = describe(self.fields[name]) if self.pending(name) else None
            row["vectors_by_encoder"] = [
                {"encoder_key": c["encoder_key"], "encoder": c["name"], "version": c["version"]}
                | {"vectors": c["n"]}
                for c in counts
                if c["field"] == name
            ]
            out.append(row)
        return out

    def reembed(
        self,
        field: str,
        *,
        encoder: Mapping[str, Any] | str | None = None,
        batch_size: int = 256,
        on_error: OnError = "raise",
        progress: bool = False,
        engine: str = "local",
        address: str | None = None,
    ) -> ReembedReport:
        """Fill the field's configured encoder space from the stored sources, then switch
        searches to it atomically and drop the old vectors.

        ``encoder`` changes the field's encoder configuration first (same form as in
        ``create_collection``). Batches commit as they go, so a call that is interrupted
        resumes where it stopped; until the switch, searches use the old space.
        ``engine="ray"`` encodes on Ray encoder actors (docs/distributed.md).
        """
        self.store.check_writable()
        job = Reembedder(self.state, batch_size, on_error, progress, engine, address)
        return job.run(field, encoder)

    def info(self) -> dict[str, Any]:
        """Counts, fields (encoder, space), and each field's index kind, parameters and file
        size; ``missing``: the fields whose plugin is not installed here, and what to
        install."""
        out: dict[str, Any] = {"name": self.name, "records": len(self), "fields": []}
        for f in self.active.values():
            index = self.indexes.get(f)
            sizes = {"index_file_bytes": self.indexes.file_bytes(f)}
            row = describe(f) | {"vectors": index.live, "index": index.params() | sizes}
            out["fields"].append(row)
        out["missing"] = [m.describe() for m in self.state.missing.values()]
        return out

    def verify(self) -> list[dict[str, Any]]:
        """Per field: the stored vectors match their checksums (``vectors``), catalog and
        index agree (no vector missing or extra), and the index file's state (current,
        behind, none yet, or damaged and to be rebuilt)."""
        self.store.check_open()
        out = []
        for f in self.active.values():
            vectors = embeddings.check(self.store.catalog, self.name, f.name, f.key)
            try:
                report = self.indexes.verify(f)
            except DamagedVectorsError:  # the index needed a rebuild from them
                n = len(self.indexes.live_vids(f))
                report = {"field": f.name, "catalog_vectors": n, "index_vectors": 0}
                report |= {"missing_from_index": n, "not_in_catalog": 0}
                report |= {"file": "cannot be rebuilt: its vectors are damaged", "ok": False}
            report["vectors"] = vectors
            report["ok"] = bool(report["ok"]) and vectors == "ok"
            out.append(report)
        return out

    def optimize(self) -> None:
        """Build or extend ANN indexes, compact deletions in them and in the vector
        segment files, and save them."""
        self.store.check_writable()
        catalog = self.store.catalog
        with catalog.lock:  # held until the loaded indexes read the moved rows
            with catalog.transaction("compacting vector segments") as conn:
                replaced = embeddings.compact(catalog, conn, self.name)
            if replaced:
                self.indexes.rebind()
        for path in replaced:
            path.unlink(missing_ok=True)
        for f in self.active.values():
            self.indexes.optimize(f)  # on a copy where it can: searches go on meanwhile
            self.indexes.save(f)

    def train_head(
        self,
        name: str,
        kind: str = "classifier",
        *,
        inputs: Sequence[str] | None = None,
        label: str | None = None,
        fusion: str | None = None,
        epochs: int | None = None,
        **options: Any,
    ) -> HeadReport:
        """Train a head on the stored embeddings of ``inputs`` (a classifier of ``label``),
        or from ``query=`` to ``target=`` (``kind="retrieval"``), and save it under
        ``<store>/heads/<collection>/<name>/`` (:mod:`mmstore.heads`); a head of the same
        name is replaced. Options: :class:`mmstore.heads.ClassifierOptions`,
        :class:`mmstore.heads.RetrievalOptions`; those not given take their defaults."""
        self.store.check_writable()
        from mmstore import heads  # torch loads only when asked for

        named = {"label": label, "fusion": fusion, "epochs": epochs}
        given: dict[str, Any] = {k: v for k, v in named.items() if v is not None} | options
        if inputs is not None:
            given["inputs"] = list(inputs)
        return heads.train_head(self.state, name, kind, **given)

    def predict(
        self, name: str, records: Any, *, on_error: OnError = "raise"
    ) -> list[dict[str, Any]]:
        """Per record (stored ids, or new record dicts encoded without storing them): the
        head's label and class probabilities, ``{"id", "label", "probabilities"}``. With
        ``on_error="skip"`` a record that cannot be predicted gets ``label`` None and an
        ``error`` saying why, and the others are predicted."""
        self.store.check_open()
        from mmstore import heads

        return heads.predict(self.state, name, records, on_error)

    def heads(self) -> list[dict[str, Any]]:
        """The collection's heads with their metrics, and whether each is stale."""
        from mmstore import heads

        return heads.list_heads(self.state)

    def flush(self) -> None:
        """Save indexes that have changes not yet in their files."""
        if not self.store.read_only:
            self.indexes.save_all(self.active)
