"""The Ray engine of ingest and re-embedding. The driver plans (checks records as local ingest
does, drops those stored with the same content), Ray Data encodes what changed on encoder
actors (one model load per actor, one actor per GPU where the cluster has GPUs), and the
store's single writer commits the vectors as they stream back, chunk by chunk, through the
same code as local ingest (:class:`mmstore.ingest.ingestor.Ingestor` with vectors given) and local
re-embedding (:meth:`mmstore.ingest.reembed.Reembedder.commit`). See docs/distributed.md."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mmstore.config import CollectionConfig
from mmstore.encoding.encode import checked_rows, encode_raw, stored_value
from mmstore.encoding.fields import Field, build_field
from mmstore.errors import (
    RAY_INSTALL,
    EncoderChangedError,
    MMStoreError,
    RayUnavailableError,
    RecordError,
    UnknownNameError,
)
from mmstore.ingest import records as rec
from mmstore.ingest import sources
from mmstore.ingest.ingestor import Ingestor
from mmstore.ingest.report import GivenVector, IngestReport, OnError, Rejected
from mmstore.plugin.manager import PluginHost
from mmstore.storage.media import MediaStore

if TYPE_CHECKING:
    from mmstore.ingest.reembed import Reembedder, ReembedReport
    from mmstore.state import CollectionState

#: where ingest and re-embedding encode: in this process, or on Ray encoder actors
ENGINES = ("local", "ray")


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise UnknownNameError("engine", engine, ENGINES)


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to ``address`` (or a new local cluster) unless the
    caller already initialized Ray, whose cluster is then used and never shut down here."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailableError(f"engine='ray' needs Ray: {RAY_INSTALL}") from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


# -- the actor ----------------------------------------------------------------------------
class EncodeActor:
    """Encodes batches of stored sources for some of a collection's fields. Built once per
    actor from the collection's stored configuration (so the model loads once per actor)
    and a plugin manager with the driver's runtime plugins."""

    def __init__(self, config: str, names: list[str], media: str, plugins: list[Any]) -> None:
        host = PluginHost(plugins)
        cfg = CollectionConfig.model_validate_json(config)
        store = MediaStore(Path(media))
        self.hook = host.hook
        self.fields = {n: build_field(n, cfg.fields[n], host, store, cfg.options) for n in names}

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("id").to_pylist()
        errors: list[str | None] = [None] * len(ids)
        out: dict[str, Any] = {"id": batch.column("id")}
        for name, f in self.fields.items():
            rows, values = [], []
            for i, src in enumerate(batch.column(name).to_pylist()):
                if src is None or errors[i] is not None:
                    continue
                try:
                    values.append(stored_value(f, ids[i], json.loads(src)))
                    rows.append(i)
                except RecordError as e:
                    errors[i] = json.dumps([name, e.problem])
            out[f"vec.{name}"] = _vector_column(self._encode(f, values), rows, len(ids), f)
            out[f"key.{name}"] = pa.array([f.key] * len(ids), pa.string())
        out["error"] = pa.array(errors, pa.string())
        return pa.table(out)

    def _encode(self, f: Field, values: list[Any]) -> np.ndarray:
        """The encoder's raw output in its own batches; shape checked, the rest on the
        driver (finiteness, normalization), as for local ingest."""
        step, parts = f.encoder.batch_size, []
        for start in range(0, len(values), step):
            batch = values[start : start + step]
            out = encode_raw(self.hook, f, batch)
            if not isinstance(out, np.ndarray) or out.shape != (len(batch), f.identity.dim):
                checked_rows(f.encoder, f, out, len(batch))  # raises, naming the shape
            parts.append(np.asarray(out, np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, f.identity.dim), np.float32)


def _vector_column(vectors: np.ndarray, rows: list[int], n: int, f: Field) -> pa.Array:
    dim = f.identity.dim
    full = np.zeros((n, dim), np.float32)
    full[rows] = vectors
    absent = np.ones(n, bool)
    absent[rows] = False
    return pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), dim, mask=pa.array(absent))


# -- running actors -----------------------------------------------------------------------
def _encoded(
    ray: Any, col: CollectionState, names: list[str], tables: list[pa.Table], progress: bool
) -> Iterator[pa.Table]:
    """Stream the encoded batches of ``tables`` (an ``id`` column and a JSON source column
    per field in ``names``) back from encoder actors."""
    fields = [col.fields[n] for n in names]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    batch = min(f.encoder.batch_size for f in fields)
    rows = sum(t.num_rows for t in tables)
    actors = max(1, min(gpus or max(1, cpus - 1), -(-rows // batch)))
    runtime = [col.store.plugins.pm.get_plugin(i.name) for i in col.store.plugins.infos()]
    plugins = [
        p for p, i in zip(runtime, col.store.plugins.infos(), strict=True) if i.source == "runtime"
    ]
    args = [col.config.model_dump_json(), names, str(col.store.media.folder), plugins]
    context = ray.data.DataContext.get_current()
    shown, context.enable_progress_bars = context.enable_progress_bars, progress
    try:
        ds = ray.data.from_arrow(tables).map_batches(
            EncodeActor,
            batch_size=batch,
            batch_format="pyarrow",
            fn_constructor_args=args,
            # Ray Data restarts a lost actor and redoes its batch (max_restarts=-1 and
            # max_task_retries=-1 are its defaults for actor pools)
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
        )
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
    except Exception as e:
        cause = _mmstore_cause(e)
        if cause is None:
            raise
        raise cause from e
    finally:
        context.enable_progress_bars = shown


def _mmstore_cause(error: BaseException | None) -> MMStoreError | None:
    """The mmstore error a Ray error wraps (a worker's EncoderError), if any."""
    seen = 0
    while error is not None and seen < 16:
        if isinstance(error, MMStoreError):
            return error
        inner = getattr(error, "cause", None)
        error = inner if isinstance(inner, BaseException) else error.__cause__
        seen += 1
    return None


def _results(batch: pa.Table, names: list[str], fields: dict[str, Field]) -> Iterator[Any]:
    """Per row of an encoded batch: its id, its error (field, problem) or None, and per
    field the vector or None."""
    for name in names:
        keys = set(batch.column(f"key.{name}").to_pylist())
        if keys - {fields[name].key}:
            raise EncoderChangedError(
                f"field {name!r}: Ray workers built encoder identity {keys.pop()}, but the "
                f"store expects {fields[name].key}; install the same plugins and versions "
                "on the workers as on the driver"
            )
    ids = batch.column("id").to_pylist()
    errors = batch.column("error").to_pylist()
    vectors = {n: _vectors(batch.column(f"vec.{n}"), fields[n]) for n in names}
    for i, rid in enumerate(ids):
        error = json.loads(errors[i]) if errors[i] else None
        yield rid, error, {n: v[i] for n, v in vectors.items() if v[i] is not None}


def _vectors(column: Any, f: Field) -> list[np.ndarray | None]:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = column.flatten().to_numpy(zero_copy_only=False)
    full = np.asarray(flat, np.float32).reshape(len(column), f.identity.dim)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [full[i] if valid[i] else None for i in range(len(column))]


# -- ingest -------------------------------------------------------------------------------
class RayIngest:
    """One ``ingest(..., engine="ray")`` call: plan on the driver, encode on Ray, commit."""

    def __init__(
        self,
        col: CollectionState,
        on_error: OnError,
        progress: bool,
        chunk_size: int,
        address: str | None,
    ) -> None:
        self.col, self.on_error, self.progress = col, on_error, progress
        self.chunk_size, self.address = chunk_size, address
        self.planner = Ingestor(col, on_error, False, chunk_size)
        #: fields encoded on Ray: those with a stored source and no fitted statistics
        self.remote: list[str] = []
        self.total = IngestReport(0)
        self.waiting: dict[str, Any] = {}  # id -> raw record, changed, awaiting vectors
        self.hashes: dict[tuple[str, str], str] = {}

    def run(self, source: Any) -> IngestReport:
        start = time.perf_counter()
        for name in self.col.fields:
            self.col.check_current(name)
        direct, tables = self._plan(source)
        for part in range(0, len(direct), self.chunk_size):
            self._commit(direct[part : part + self.chunk_size], {})
        if tables:
            self._encode_and_commit(connect(self.address), tables)
        if not self.total.run_id:  # nothing changed: still a run on record
            self._commit([], {})
        self.total.seconds = time.perf_counter() - start
        return self.total

    def _plan(self, source: Any) -> tuple[list[Any], list[pa.Table]]:
        """Check every record before anything is written (with ``raise``, a bad record
        fails the call here); keep the changed ones, and the sources to encode on Ray."""
        fields = self.col.fields.values()
        self.remote = [f.name for f in fields if not f.encoder.fitted]
        direct: list[Any] = []
        tables: list[pa.Table] = []
        for chunk in _chunks(self.col, source, self.chunk_size):
            raws = _by_id(chunk, self.total.received)
            rows: list[dict[str, Any]] = []
            for p, needed in self.planner.plan(chunk, self.total):
                sent = {
                    n: json.dumps(p.sources[n])
                    for n in needed
                    if n in self.remote and p.sources.get(n) is not None
                }
                if not sent:
                    direct.append(raws[p.id])
                    continue
                self.waiting[p.id] = raws[p.id]
                self.hashes.update({(p.id, n): p.hashes[n] for n in sent})
                rows.append({"id": p.id, **sent})
            if rows:
                tables.append(_table(rows, self.remote))
        self.remote = [
            n for n in self.remote if any(t.column(n).null_count < len(t) for t in tables)
        ]
        tables = [t.select(["id", *self.remote]) for t in tables]
        return direct, tables

    def _encode_and_commit(self, ray: Any, tables: list[pa.Table]) -> None:
        ready: list[Any] = []
        given: dict[tuple[str, str], GivenVector] = {}
        for batch in _encoded(ray, self.col, self.remote, tables, self.progress):
            for rid, error, vectors in _results(batch, self.remote, self.col.fields):
                raw = self.waiting.pop(rid)
                if error is not None:
                    self._reject(RecordError(rid, error[0], error[1]))
                    continue
                for name, vector in vectors.items():
                    given[rid, name] = GivenVector(self.hashes[rid, name], self._key(name), vector)
                ready.append(raw)
            if len(ready) >= self.chunk_size:
                self._commit(ready, given)
                ready, given = [], {}
        if ready:
            self._commit(ready, given)

    def _key(self, name: str) -> str:
        return self.col.fields[name].key

    def _reject(self, error: RecordError) -> None:
        if self.on_error == "raise":
            raise error
        self.total.rejected.append(Rejected(str(error.record_id), error.field, error.problem))

    def _commit(self, records: list[Any], given: dict[tuple[str, str], GivenVector]) -> None:
        """One transaction of the store's writer: the same checks, upsert and lineage as
        local ingest, with the vectors the actors computed."""
        size = max(1, len(records))
        part = Ingestor(self.col, self.on_error, False, size, given=given).run(records)
        total = self.total
        total.run_id = total.run_id or part.run_id
        total.written += part.written
        total.unchanged += part.unchanged
        total.encoded += part.encoded
        total.rejected.extend(part.rejected)


def ingest_on_ray(
    col: CollectionState,
    source: Any,
    *,
    on_error: OnError,
    progress: bool,
    chunk_size: int,
    address: str | None,
) -> IngestReport:
    """``col.ingest(source, engine="ray")``: see :class:`RayIngest`."""
    return RayIngest(col, on_error, progress, chunk_size, address).run(source)


def _chunks(col: CollectionState, source: Any, size: int) -> Iterator[list[dict[str, Any]]]:
    """Record chunks from what local ingest takes, a Ray Dataset, or a path (a .jsonl,
    .csv or .parquet file, or a folder of media files)."""
    if type(source).__module__.startswith("ray.data") and hasattr(source, "iter_batches"):
        for batch in source.iter_batches(batch_size=size, batch_format="pyarrow"):
            yield from sources.chunks(batch, size)
        return
    if isinstance(source, str | Path):
        from mmstore.ingest.files import read_records
        from mmstore.ingest.folders import folder_records

        path = Path(source)
        source = folder_records(path, col.fields)[1] if path.is_dir() else read_records(path)
    yield from sources.chunks(source, size)


def _by_id(chunk: list[Any], offset: int) -> dict[str, Any]:
    """The chunk's records by id (those without a usable id are the planner's to reject)."""
    out = {}
    for position, raw in enumerate(chunk, start=offset):
        try:
            out[rec.record_id(raw, position)] = raw
        except RecordError:
            continue
    return out


def _table(rows: list[dict[str, Any]], names: list[str]) -> pa.Table:
    columns = {"id": pa.array([r["id"] for r in rows], pa.string())}
    for n in names:
        columns[n] = pa.array([r.get(n) for r in rows], pa.string())
    return pa.table(columns)


# -- re-embedding -------------------------------------------------------------------------
def reembed_on_ray(
    job: Reembedder, new: Field, ids: list[str], hashes: list[str], report: ReembedReport
) -> None:
    """Fill ``new``'s space on Ray from the stored sources of ``ids``; each batch that
    streams back commits through the local re-embedding's writer."""
    if not ids:
        return
    tables, hash_of = [], dict(zip(ids, hashes, strict=True))
    for start in range(0, len(ids), job.batch_size):
        part = ids[start : start + job.batch_size]
        stored = job.sources(new, part)
        rows = []
        for rid in part:
            if stored.get(rid) is None:
                _reembed_reject(job, report, rid, None)
            else:
                rows.append({"id": rid, new.name: json.dumps(stored[rid])})
        if rows:
            tables.append(_table(rows, [new.name]))
    if not tables:
        return
    ray = connect(job.address)
    for batch in _encoded(ray, job.col, [new.name], tables, job.progress):
        kept, vectors = [], []
        for rid, error, found in _results(batch, [new.name], {new.name: new}):
            if error is not None:
                _reembed_reject(job, report, rid, error[1])
                continue
            kept.append((rid, hash_of[rid]))
            vectors.append(found[new.name])
        if kept:
            checked, bad = checked_rows(new.encoder, new, np.stack(vectors), len(kept))
            job.commit(new, kept, checked, bad, report)


def _reembed_reject(job: Reembedder, report: ReembedReport, rid: str, problem: str | None) -> None:
    if problem is None:  # no stored source: the local path's own error says what to do
        try:
            stored_value(job.col.fields[report.field], rid, None)
        except RecordError as e:
            problem = e.problem
    report.rejected.append(Rejected(rid, report.field, str(problem)))
    if job.on_error == "raise":
        raise RecordError(rid, report.field, str(problem))
