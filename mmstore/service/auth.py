"""Access control of the HTTP service: a key in ``Authorization: Bearer <key>`` (or
``X-API-Key``), checked against the :class:`~mmstore.service.keys.KeyStore` at
``request.app.state.keys``; 401 without a valid key, 403 outside its scopes or collections.
Tokens are never echoed or logged."""

from __future__ import annotations

from fastapi import HTTPException, Request

from mmstore.service.keys import SCOPES, KeyInfo, KeyStore

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail={"error": "Unauthorized", "message": message},
        headers=_CHALLENGE,
    )


def _forbidden(message: str) -> HTTPException:
    return HTTPException(status_code=403, detail={"error": "Forbidden", "message": message})


def request_token(request: Request) -> str | None:
    """The key the request carries, or None; raises 401 on a malformed header."""
    header = request.headers.get("authorization")
    if header is not None:
        kind, _, value = header.strip().partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise _unauthorized("malformed Authorization header; send 'Bearer <key>'")
        return value.strip()
    key = request.headers.get("x-api-key")
    if key is not None:
        return key.strip() or None
    return None


def authorize(request: Request, scope: str, collection: str | None = None) -> KeyInfo:
    """The key of the request if it holds ``scope`` (and may reach ``collection``);
    HTTPException 401 or 403 otherwise."""
    if scope not in SCOPES:  # a programming error in a route, not the client's
        raise ValueError(f"unknown scope {scope!r}")
    keys: KeyStore | None = getattr(request.app.state, "keys", None)
    if keys is None:
        raise RuntimeError("no KeyStore at app.state.keys")
    token = request_token(request)
    if token is None:
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    info = keys.verify(token)
    if info is None:
        raise _unauthorized("invalid or revoked API key")
    request.state.key = info
    if not info.allows(scope):
        raise _forbidden(
            f"API key {info.id!r} lacks scope {scope!r} (it has {', '.join(info.scopes)})"
        )
    if collection is not None and not info.can_access(collection):
        raise _forbidden(f"API key {info.id!r} has no access to collection {collection!r}")
    return info
