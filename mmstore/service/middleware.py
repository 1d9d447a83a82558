"""Pure ASGI middleware of the service, outermost first: :class:`Measure` (request counts
and latency per route, for ``/metrics``), the key check of :mod:`mmstore.service.auth`,
:class:`BodyLimit` (413 before a too-large body is read), then :class:`Admission` (503
past ``max_inflight`` requests in hand). A 401 or a 413 is answered without taking a
place, so a flood of refused requests does not crowd out the searches."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


async def respond(
    send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a JSON body and close the connection (the request body is left unread)."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Metrics:
    """Request counts per route and status, and latency percentiles per route."""

    def __init__(self, window: int) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))

    def record(self, route: str, status: int, ms: float) -> None:
        with self._lock:
            self.requests[route][str(status)] += 1
            self.latency[route].append(ms)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            requests = {r: dict(s) for r, s in self.requests.items()}
            samples = {r: np.fromiter(d, float) for r, d in self.latency.items()}
        errors = {r: sum(n for st, n in s.items() if int(st) >= 400) for r, s in requests.items()}
        latency = {}
        for r, a in samples.items():
            p50, p95, p99 = np.percentile(a, [50, 95, 99]) if len(a) else (0.0, 0.0, 0.0)
            latency[r] = {
                "count": len(a),
                "p50": round(float(p50), 3),
                "p95": round(float(p95), 3),
                "p99": round(float(p99), 3),
            }
        return {"requests": requests, "errors": errors, "latency_ms": latency}


class Measure:
    """Counts every answer (401 and 413 from the middleware too) under its route."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, routes: Callable[[], list[BaseRoute]]
    ) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def route_of(self, scope: Scope) -> str:
        found = scope.get("route")  # set by the router once it matched the request
        if found is not None and getattr(found, "path", None):
            return f"{scope['method']} {found.path}"
        for r in self.routes():  # answered before routing (401, 413, 503)
            match, _ = r.matches(scope)
            if match == Match.FULL:
                return f"{scope['method']} {getattr(r, 'path', '?')}"
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_)
        finally:
            ms = (time.perf_counter() - start) * 1000
            self.metrics.record(self.route_of(scope), status, ms)


class InHand:
    """The requests :class:`Admission` holds now (``app.state.admission``), and its limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_hand = limit, 0


class Admission:
    """At most ``limit`` requests in hand at once past the key and size checks, running or
    waiting for a worker thread; one more is answered 503 with ``Retry-After`` at once
    instead of waiting in an unbounded queue. ``/health`` is always answered. The count
    lives on the event loop, the only thread that runs this, so it needs no lock."""

    def __init__(self, app: ASGIApp, counter: InHand, retry_after: int = 1) -> None:
        self.app, self.counter, self.retry_after = app, counter, retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        counter = self.counter
        if counter.in_hand >= counter.limit:
            await respond(send, 503, self._busy(), [(b"retry-after", b"%d" % self.retry_after)])
            return
        counter.in_hand += 1
        try:
            await self.app(scope, receive, send)
        finally:
            counter.in_hand -= 1

    def _busy(self) -> dict[str, Any]:
        message = (
            f"the service has {self.counter.limit} requests in hand, its limit "
            f"(max_inflight); send this one again after {self.retry_after} s"
        )
        return {"error": "ServiceBusyError", "message": message}


class BodyLimit:
    """413 from Content-Length before the body is read, and while streaming a body without
    one as soon as the limit is passed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            n = int(length) if length.isdigit() else -1
            if n < 0:
                body = {"error": "BadRequest", "message": "invalid Content-Length"}
                await respond(send, 400, body)
                return
            if n > self.limit:
                await respond(send, 413, self._body(BodyTooLarge(self.limit)))
                return
        seen = 0
        started = False

        async def receive_() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def send_(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_, send_)
        except BodyTooLarge as e:  # raised outside FastAPI's handlers
            if started:
                raise
            await respond(send, 413, self._body(e))

    @staticmethod
    def _body(e: BodyTooLarge) -> dict[str, Any]:
        return {"error": "PayloadTooLarge", "message": str(e.detail)}
