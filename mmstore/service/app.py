"""The FastAPI app of CONTRACT.md: ``create_app(store, settings)`` joins the routers of
:mod:`mmstore.service.routes` (one per resource), the error handlers of
:mod:`mmstore.service.errors` and the middleware of :mod:`mmstore.service.middleware` and
:mod:`mmstore.service.auth`. What routes share (the write lock, limits, the job table) is
the :class:`~mmstore.service.context.Service` on ``app.state``; bodies are in
:mod:`~mmstore.service.models` and JSON conversion in :mod:`~mmstore.service.wire`.
"""

from __future__ import annotations

import threading

from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from mmstore._version import __version__
from mmstore.service.auth import AuthGate
from mmstore.service.context import Service
from mmstore.service.errors import add_error_handlers
from mmstore.service.jobs import JobLog, JobTable
from mmstore.service.keys import KeyStore
from mmstore.service.middleware import Admission, BodyLimit, InHand, Measure, Metrics
from mmstore.service.routes import ROUTERS
from mmstore.service.settings import Settings
from mmstore.service.wire import decode_values, error_body, jsonable
from mmstore.store import Store


def create_app(store: Store, settings: Settings | None = None) -> FastAPI:
    """The service app over an open (writable) store; the caller closes the store."""
    settings = settings or Settings()
    lock = threading.RLock()
    jobs = JobTable(error_body, JobLog(store.catalog))  # marks an earlier service's open jobs
    service = Service(store, settings, lock, jobs, Metrics(settings.metrics_window))
    app = FastAPI(
        title="mmstore",
        version=__version__,
        description="The mmstore embedding service (collections, records, search, heads).",
    )
    app.state.service = service
    app.state.store, app.state.settings, app.state.store_lock = store, settings, lock
    app.state.jobs, app.state.metrics = service.jobs, service.metrics
    # added innermost first: Measure, AuthGate, BodyLimit, then Admission see each request
    app.state.admission = InHand(settings.max_inflight)
    app.add_middleware(Admission, counter=app.state.admission)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.auth:
        app.state.keys = KeyStore(store.catalog)
        app.add_middleware(AuthGate, keys=app.state.keys)
    app.add_middleware(Measure, metrics=service.metrics, routes=lambda: routes_of(app))
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def routes_of(app: FastAPI) -> list[BaseRoute]:
    """Every route of the app, the routers' own ones included (FastAPI keeps an included
    router as one entry of ``app.router.routes``), for :class:`Measure` to name a request."""
    own = [r for r in app.router.routes if isinstance(r, Route)]
    return [*own, *(r for router in ROUTERS for r in router.routes)]


__all__ = ["Settings", "create_app", "decode_values", "jsonable"]
