"""The FastAPI app of CONTRACT.md: ``create_app(store, settings)``, its routes and error
handlers. Bodies are in :mod:`~mmstore.service.models`, JSON conversion in
:mod:`~mmstore.service.wire`, middleware in :mod:`~mmstore.service.middleware` and
:mod:`~mmstore.service.auth`, value limits in :mod:`~mmstore.service.limits`.

Concurrency: the service is the store's single writer. DuckDB's one shared connection is
not thread-safe and the indexes are mutated in place, so every store call (reads and
searches too) runs under one global lock, ``app.state.store_lock``; correctness first,
parallelism later. Routes are sync functions, run by FastAPI in its thread pool; head
training runs as a background job (:mod:`mmstore.service.jobs`) that takes the same lock
while it trains, so other requests wait for it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from mmstore._version import __version__
from mmstore.collection import Collection
from mmstore.errors import MMStoreError, UnknownNameError
from mmstore.service import limits
from mmstore.service.auth import AuthGate, authorize
from mmstore.service.jobs import JobTable
from mmstore.service.keys import KeyStore
from mmstore.service.middleware import BodyLimit, Measure, Metrics
from mmstore.service.models import (
    ERRORS,
    CreateCollection,
    DeleteBody,
    HitsOut,
    IngestBody,
    IngestReportOut,
    JobOut,
    ManyHitsOut,
    PredictBody,
    SearchBody,
    SearchManyBody,
    TrainBody,
)
from mmstore.service.settings import Settings
from mmstore.service.wire import decode_values, error_body, jsonable
from mmstore.store import Store

log = logging.getLogger(__name__)
Scope_ = Literal["read", "write", "admin"]


def create_app(store: Store, settings: Settings | None = None) -> FastAPI:
    """The service app over an open (writable) store; the caller closes the store."""
    settings = settings or Settings()
    lock = threading.RLock()
    metrics = Metrics(settings.metrics_window)
    jobs = JobTable(error_body)
    app = FastAPI(
        title="mmstore",
        version=__version__,
        description="The mmstore embedding service (collections, records, search, heads).",
    )
    app.state.store, app.state.settings, app.state.store_lock = store, settings, lock
    app.state.jobs, app.state.metrics = jobs, metrics
    # added innermost first: Measure, then AuthGate, then BodyLimit see each request
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.auth:
        app.state.keys = KeyStore(store.catalog)
        app.add_middleware(AuthGate, keys=app.state.keys, lock=lock)
    app.add_middleware(Measure, metrics=metrics, routes=lambda: app.router.routes)

    def need(scope: Scope_) -> Any:
        """A dependency: the request's KeyInfo (None without auth), or 403. AuthGate has
        found the key already (or answered 401), so this only compares scopes and
        collections, on the event loop (no thread hop, no catalog read)."""

        async def dependency(request: Request) -> Any:
            if not settings.auth:
                return None
            return authorize(request, scope, request.path_params.get("c"))

        dependency.__name__ = f"need_{scope}"
        return Depends(dependency)

    def call(fn: Callable[[], Any]) -> Any:
        with lock:
            return fn()

    def col(name: str) -> Collection:
        return store.collection(name)

    def modalities(name: str) -> dict[str, str]:
        """Field -> modality of a collection (a 404 for an unknown one)."""
        return call(lambda: {f: x.modality.name for f, x in col(name).fields.items()})

    def ingest_within_limits(c: str, records: list[dict[str, Any]], on_error: str) -> Any:
        """Ingest the records within the value limits; those over one fail the request
        (413) or, with ``skip``, are listed as rejected."""
        kept, over = limits.check_records(records, modalities(c), settings, on_error == "skip")
        report = call(lambda: col(c).ingest(kept, on_error=on_error))  # type: ignore[arg-type]
        report.received += len(over)
        report.rejected = limits.renumbered(report.rejected, records, kept) + over
        return jsonable(report)

    # errors
    @app.exception_handler(MMStoreError)
    async def _mm(request: Request, e: MMStoreError) -> JSONResponse:
        return JSONResponse(error_body(e), status_code=e.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = jsonable([{k: v for k, v in x.items() if k != "ctx"} for x in e.errors()])
        msg = "; ".join(
            f"{'.'.join(map(str, x.get('loc', ())))}: {x.get('msg')}" for x in e.errors()
        )
        return JSONResponse(
            {"error": "ValidationError", "message": msg or "invalid request", "detail": errs},
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException) -> JSONResponse:
        name = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 413: "PayloadTooLarge"}.get(
            e.status_code, "HTTPError"
        )
        detail = e.detail
        body = (
            {"error": detail.get("error", name), "message": str(detail.get("message", ""))}
            if isinstance(detail, dict)
            else {"error": name, "message": str(detail)}
        )
        return JSONResponse(
            body,
            status_code=e.status_code,
            headers=getattr(e, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "InternalError", "message": str(e)}, status_code=500)

    def too_many(what: str, n: int) -> None:
        if n > settings.max_batch:
            raise HTTPException(
                413, f"{n} {what} in one request; the limit is {settings.max_batch} (max_batch)"
            )

    # health and metrics
    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness, version and the configured limits (no key needed)."""
        return {
            "status": "ok",
            "version": __version__,
            "limits": settings.limits(),
            "auth": settings.auth,
        }

    @app.get("/metrics", tags=["service"], dependencies=[need("admin")], responses=ERRORS)
    def metrics_route() -> dict[str, Any]:
        """Request counts per route and status, errors per route, latency percentiles."""
        return metrics.snapshot()

    # collections
    @app.get("/collections", tags=["collections"], dependencies=[need("read")], responses=ERRORS)
    def list_collections(request: Request) -> dict[str, list[str]]:
        """The collections the request's key may see (all of them without auth)."""
        key = getattr(request.state, "key", None)
        names = call(store.collections)
        return {"collections": [n for n in names if _may_see(key, n)]}

    @app.post(
        "/collections",
        status_code=201,
        tags=["collections"],
        dependencies=[need("admin")],
        responses=ERRORS,
    )
    def create_collection(body: CreateCollection) -> dict[str, Any]:
        def go() -> dict[str, Any]:
            c = store.create_collection(
                body.name,
                body.encoders,
                options=body.options,
                index=body.index,
                exist_ok=body.exist_ok,
            )
            return c.info()

        return jsonable(call(go))

    @app.get(
        "/collections/{c}", tags=["collections"], dependencies=[need("read")], responses=ERRORS
    )
    def collection_info(c: str) -> dict[str, Any]:
        return jsonable(call(lambda: col(c).info()))

    @app.delete(
        "/collections/{c}", tags=["collections"], dependencies=[need("admin")], responses=ERRORS
    )
    def drop_collection(c: str) -> dict[str, str]:
        call(lambda: store.drop_collection(c))
        return {"dropped": c}

    # records
    @app.post(
        "/collections/{c}/records",
        tags=["records"],
        dependencies=[need("write")],
        responses=ERRORS,
        response_model=IngestReportOut,
    )
    def ingest(c: str, body: IngestBody) -> Any:
        too_many("records", len(body.records))
        return ingest_within_limits(c, decode_values(body.records), body.on_error)

    media_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["records"],
                        "properties": {
                            "records": {"type": "string", "description": "a JSON list of records"},
                            "on_error": {"type": "string", "enum": ["raise", "skip"]},
                        },
                        "additionalProperties": {
                            "type": "string",
                            "format": "binary",
                            "description": "a part named '<record id>/<field>' fills that "
                            "field of that record with the file's bytes",
                        },
                    }
                }
            },
        }
    }

    @app.post(
        "/collections/{c}/records/media",
        tags=["records"],
        dependencies=[need("write")],
        responses=ERRORS,
        response_model=IngestReportOut,
        openapi_extra=media_body,
    )
    async def ingest_media(c: str, request: Request) -> Any:
        """Multipart ingest: ``records`` is a JSON list; each file part named
        ``<record id>/<field>`` fills that field of that record with the file's bytes."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _validation("body", "expected multipart/form-data")
        max_files = settings.max_batch * 16
        form = await request.form(max_files=max_files, max_fields=max_files)
        try:
            raw = form.get("records")
            if not isinstance(raw, str):
                raise _validation("records", "a form field 'records' (a JSON list) is required")
            try:
                records = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _validation("records", f"not JSON: {e}") from None
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise _validation("records", "must be a JSON list of objects")
            too_many("records", len(records))
            records = decode_values(records)
            on_error: Literal["raise", "skip"] = "raise"
            given = form.get("on_error")
            if given in ("raise", "skip"):
                on_error = "skip" if given == "skip" else "raise"
            elif given is not None:
                raise _validation("on_error", "must be 'raise' or 'skip'")
            by_id = {str(r.get("id")): r for r in records}
            for name, part in form.multi_items():
                if not isinstance(part, UploadFile):
                    continue
                rid, sep, field = name.rpartition("/")
                if not sep or not rid or not field:
                    raise _validation(name, "a file part is named '<record id>/<field>'")
                if rid not in by_id:
                    raise _validation(name, f"no record with id {rid!r} in 'records'")
                by_id[rid][field] = await part.read()
        finally:
            await form.close()
        return await run_in_threadpool(ingest_within_limits, c, records, on_error)

    @app.get(
        "/collections/{c}/records", tags=["records"], dependencies=[need("read")], responses=ERRORS
    )
    def get_records(
        c: str, ids: str = Query(..., description="comma-separated record ids")
    ) -> dict[str, Any]:
        wanted = [s.strip() for s in ids.split(",") if s.strip()]
        if not wanted:
            raise _validation("ids", "give at least one id")
        too_many("ids", len(wanted))
        return {"records": jsonable(call(lambda: col(c).get(wanted)))}

    @app.post(
        "/collections/{c}/records/delete",
        tags=["records"],
        dependencies=[need("write")],
        responses=ERRORS,
    )
    def delete_records(c: str, body: DeleteBody) -> dict[str, int]:
        too_many("ids", len(body.ids))
        return {"deleted": call(lambda: col(c).delete(body.ids))}

    # search
    reserved = {"target", "k", "where", "vector", "record", "fusion", "weights", "head"}

    @app.post(
        "/collections/{c}/search",
        tags=["search"],
        dependencies=[need("read")],
        responses=ERRORS,
        response_model=HitsOut,
    )
    def search(c: str, body: SearchBody) -> Any:
        """Every query form of ``Collection.search``: field or modality ``values`` (bytes as
        ``{"$base64": ...}``), a raw ``vector``, a stored ``record``; ``where`` filters."""
        if body.k > settings.max_k:
            raise _validation("k", f"k={body.k} is over the limit of {settings.max_k} (max_k)")
        clash = reserved & set(body.values)
        if clash:
            raise _validation("values", f"{sorted(clash)} are search arguments, not fields")
        values = decode_values(body.values)
        limits.check_query(values, modalities(c), settings)
        vector = None if body.vector is None else np.asarray(body.vector, np.float32)
        hits = call(
            lambda: col(c).search(
                target=body.target,
                k=body.k,
                where=body.where,
                vector=vector,
                record=body.record,
                fusion=body.fusion,
                weights=body.weights,
                head=body.head,
                **values,
            )
        )
        return {"hits": [jsonable(asdict(h)) for h in hits]}

    @app.post(
        "/collections/{c}/search_many",
        tags=["search"],
        dependencies=[need("read")],
        responses=ERRORS,
        response_model=ManyHitsOut,
    )
    def search_many(c: str, body: SearchManyBody) -> Any:
        """``Collection.search_many``: ``vectors`` (a list of rows) or one field's list of
        ``values``, at most ``max_batch`` queries; hits for each query, in order."""
        if body.k > settings.max_k:
            raise _validation("k", f"k={body.k} is over the limit of {settings.max_k} (max_k)")
        too_many("queries", len(body.vectors or []) + sum(map(len, body.values.values())))
        values = decode_values(body.values)
        for name, batch in values.items():
            for value in batch:
                limits.check_query({name: value}, modalities(c), settings)
        batches = call(
            lambda: col(c).search_many(
                body.vectors, target=body.target, k=body.k, where=body.where, **values
            )
        )
        return {"results": [{"hits": [jsonable(asdict(h)) for h in hits]} for hits in batches]}

    # heads
    @app.post(
        "/collections/{c}/heads",
        status_code=202,
        tags=["heads"],
        dependencies=[need("write")],
        responses=ERRORS,
    )
    def train_head(c: str, body: TrainBody) -> dict[str, str]:
        """Start training a head as a background job; poll ``GET /jobs/{id}``."""
        options = dict(body.model_extra or {})
        call(lambda: col(c))  # an unknown collection is a 404 now, not a failed job

        def run() -> dict[str, Any]:
            with lock:
                r = col(c).train_head(body.name, body.kind, **options)
            return jsonable(
                {
                    "name": r.name,
                    "kind": r.kind,
                    "path": r.path,
                    "classes": r.classes,
                    "metrics": r.metrics,
                    "best_epoch": r.best_epoch,
                    "split_rows": r.split_rows,
                    "excluded": r.excluded,
                }
            )

        job = jobs.submit("train_head", run)
        return {"job": job.id}

    @app.get(
        "/jobs/{id}",
        tags=["heads"],
        dependencies=[need("write")],
        responses=ERRORS,
        response_model=JobOut,
    )
    def job_status(id: str) -> Any:
        job = jobs.get(id)
        if job is None:
            raise UnknownNameError("job", id, [])
        return job.to_dict()

    @app.get(
        "/collections/{c}/heads", tags=["heads"], dependencies=[need("read")], responses=ERRORS
    )
    def list_heads(c: str) -> dict[str, Any]:
        return {"heads": jsonable(call(lambda: col(c).heads()))}

    @app.post(
        "/collections/{c}/heads/{name}/predict",
        tags=["heads"],
        dependencies=[need("read")],
        responses=ERRORS,
    )
    def predict(c: str, name: str, body: PredictBody) -> dict[str, Any]:
        too_many("records", len(body.records))
        records = decode_values(body.records)
        news = [r for r in records if isinstance(r, dict)]
        limits.check_records(news, modalities(c), settings, skip=False)
        return {"predictions": jsonable(call(lambda: col(c).predict(name, records)))}

    return app


def _validation(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", *field.split(".")), "msg": message}]
    )


def _may_see(key: Any, name: str) -> bool:
    """Whether a key (a KeyInfo, or None without auth) may see a collection."""
    return key is None or bool(key.can_access(name))


__all__ = ["Settings", "create_app", "decode_values", "jsonable"]
