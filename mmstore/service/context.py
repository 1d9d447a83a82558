"""What every route of the service shares: the store, the settings, the job table, and the
dependencies that check a request's key and limits.

Concurrency (docs/concurrency.md): the service is the store's single writer. Reads
(searches, gets, counts, predictions, listings) run in parallel in FastAPI's thread pool on
the store's snapshot reads, calling the store directly with no lock of the service; writes
run one at a time under ``Service.lock`` (``app.state.store_lock``, :meth:`Service.write`),
a head-training job included while it trains, so that a write waits for the one before it
and no read waits for either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from mmstore.collection import Collection
from mmstore.service import limits
from mmstore.service.auth import authorize
from mmstore.service.jobs import JobTable
from mmstore.service.middleware import Metrics
from mmstore.service.settings import Settings
from mmstore.service.wire import jsonable
from mmstore.store import Store

Scope = Literal["read", "write", "admin"]


@dataclass
class Service:
    """The app's shared state (``app.state.service``); routes reach it through ``Depends``."""

    store: Store
    settings: Settings
    lock: threading.RLock
    jobs: JobTable
    metrics: Metrics

    def write(self, fn: Callable[[], Any]) -> Any:
        """Run a store call that writes, after the write before it."""
        with self.lock:
            return fn()

    def col(self, name: str) -> Collection:
        return self.store.collection(name)

    def modalities(self, name: str) -> dict[str, str]:
        """Field -> modality of a collection (a 404 for an unknown one)."""
        return {f: x.modality.name for f, x in self.col(name).fields.items()}

    def too_many(self, what: str, n: int) -> None:
        """A 413 when one request carries more than ``max_batch`` of ``what``."""
        limit = self.settings.max_batch
        if n > limit:
            raise HTTPException(413, f"{n} {what} in one request; the limit is {limit} (max_batch)")

    def check_k(self, k: int) -> None:
        if k > self.settings.max_k:
            raise validation("k", f"k={k} is over the limit of {self.settings.max_k} (max_k)")

    def ingest_within_limits(self, c: str, records: list[dict[str, Any]], on_error: str) -> Any:
        """Ingest the records within the value limits; those over one fail the request
        (413) or, with ``skip``, are listed as rejected."""
        skip = on_error == "skip"
        kept, over = limits.check_records(records, self.modalities(c), self.settings, skip)
        report = self.write(lambda: self.col(c).ingest(kept, on_error=on_error))  # type: ignore[arg-type]
        report.received += len(over)
        report.rejected = limits.renumbered(report.rejected, records, kept) + over
        return jsonable(report)


def service(request: Request) -> Service:
    """A dependency: the app's :class:`Service`."""
    found: Service = request.app.state.service
    return found


def need(scope: Scope) -> Any:
    """A dependency: the request's KeyInfo (None without auth), or 403. AuthGate has found
    the key already (or answered 401), so this only compares scopes and collections, on the
    event loop (no thread hop, no catalog read)."""

    async def dependency(request: Request) -> Any:
        if not request.app.state.settings.auth:
            return None
        return authorize(request, scope, request.path_params.get("c"))

    dependency.__name__ = f"need_{scope}"
    return Depends(dependency)


def validation(field: str, message: str) -> RequestValidationError:
    """A 422 naming the body field ``field`` (dotted for nested ones)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", *field.split(".")), "msg": message}]
    )


def may_see(key: Any, name: str) -> bool:
    """Whether a key (a KeyInfo, or None without auth) may see a collection."""
    return key is None or bool(key.can_access(name))


#: the route parameter that gives a route the app's Service
SERVICE = Depends(service)
