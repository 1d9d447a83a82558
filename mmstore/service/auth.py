"""Access control of the HTTP service: a key in ``Authorization: Bearer <key>`` (or
``X-API-Key``), checked against the :class:`~mmstore.service.keys.KeyStore` at
``request.app.state.keys``; 401 without a valid key, 403 outside its scopes or collections.
Tokens are never echoed or logged.

:class:`AuthGate` answers 401 before anything else of a request is looked at (its body is
not read or parsed), on every path but :data:`OPEN_PATHS`; :func:`authorize`, a route's
dependency, then checks the key's scopes and collections (403).
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from mmstore.service.keys import SCOPES, KeyInfo, KeyStore
from mmstore.service.middleware import respond

#: paths served without a key: liveness and the API's description
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail={"error": "Unauthorized", "message": message},
        headers=_CHALLENGE,
    )


def _forbidden(message: str) -> HTTPException:
    return HTTPException(status_code=403, detail={"error": "Forbidden", "message": message})


def request_token(headers: Headers) -> str | None:
    """The key a request carries, or None; raises 401 on a malformed header."""
    header = headers.get("authorization")
    if header is not None:
        kind, _, value = header.strip().partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise _unauthorized("malformed Authorization header; send 'Bearer <key>'")
        return value.strip()
    key = headers.get("x-api-key")
    if key is not None:
        return key.strip() or None
    return None


def verified(keys: KeyStore, headers: Headers) -> KeyInfo:
    """The valid, unrevoked key of the request; HTTPException 401 otherwise."""
    token = request_token(headers)
    if token is None:
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    info = keys.verify(token)
    if info is None:
        raise _unauthorized("invalid or revoked API key")
    return info


class AuthGate:
    """401 for a request without a valid key, before its body is read; the key found is
    left in the request's state for :func:`authorize`. A key not in the cache is looked up
    in the catalog (a snapshot read) in a worker thread."""

    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            token = request_token(headers)
            info = self.keys.cached(token) if token else None  # no thread hop when known
            if info is None:
                info = await run_in_threadpool(verified, self.keys, headers)
        except HTTPException as e:
            body = e.detail if isinstance(e.detail, dict) else {"message": str(e.detail)}
            challenge = [(b"www-authenticate", b"Bearer")]
            await respond(send, 401, {"error": "Unauthorized", **body}, challenge)
            return
        scope.setdefault("state", {})["key"] = info
        await self.app(scope, receive, send)


def authorize(request: Request, scope: str, collection: str | None = None) -> KeyInfo:
    """The key of the request if it holds ``scope`` (and may reach ``collection``);
    HTTPException 401 or 403 otherwise."""
    if scope not in SCOPES:  # a programming error in a route, not the client's
        raise ValueError(f"unknown scope {scope!r}")
    info: KeyInfo | None = getattr(request.state, "key", None)  # found by AuthGate
    if info is None:
        keys: KeyStore | None = getattr(request.app.state, "keys", None)
        if keys is None:
            raise RuntimeError("no KeyStore at app.state.keys")
        info = verified(keys, request.headers)
        request.state.key = info
    if not info.allows(scope):
        raise _forbidden(
            f"API key {info.id!r} lacks scope {scope!r} (it has {', '.join(info.scopes)})"
        )
    if collection is not None and not info.can_access(collection):
        raise _forbidden(f"API key {info.id!r} has no access to collection {collection!r}")
    return info
