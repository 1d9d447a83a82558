"""API keys of the HTTP service: created, listed, revoked and verified against the catalog
(table ``mms_api_keys``).

A key reads ``mms_<id>_<secret>``: ``id`` (``k_`` and 8 hex digits) is public and finds the
row; the secret (32 random bytes, URL-safe base64) is returned once by :meth:`KeyStore.create`
and never stored or logged: the catalog keeps a salted PBKDF2-HMAC-SHA256 of it, compared in
constant time. Scopes nest: ``admin`` includes ``write``, which includes ``read``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mmstore.config import check_name
from mmstore.errors import InvalidInputError, NotFoundError, ReadOnlyError
from mmstore.storage import schema
from mmstore.storage.catalog import Catalog

SCOPES = ("read", "write", "admin")  # each includes the ones before it
ALL_COLLECTIONS = "*"
TOKEN_PREFIX = "mms_"
ITERATIONS = 20_000  # the secret has 256 random bits; the iterations only slow a stolen table
CACHE_SECONDS = 10.0  # verified tokens are remembered this long (cleared on revoke)

_TOKEN_RE = re.compile(r"^mms_(?P<id>k_[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{43})$")
_DUMMY_SALT = b"\x00" * 16


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: never its secret or hash."""

    id: str
    name: str
    scopes: tuple[str, ...]
    collections: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        """Whether the key holds ``scope`` or a scope that includes it."""
        need = _scope_rank(scope)
        return any(SCOPES.index(s) >= need for s in self.scopes if s in SCOPES)

    def can_access(self, collection: str) -> bool:
        return ALL_COLLECTIONS in self.collections or collection in self.collections

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "collections": list(self.collections),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _scope_rank(scope: str) -> int:
    if scope not in SCOPES:
        raise InvalidInputError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    return SCOPES.index(scope)


def parse_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes as given (a list, or one comma-separated string), checked and deduplicated."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    out: list[str] = []
    for s in items:
        if not isinstance(s, str):
            raise InvalidInputError(f"a scope must be a string, not {s!r}")
        s = s.strip()
        _scope_rank(s)
        if s not in out:
            out.append(s)
    if not out:
        raise InvalidInputError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return tuple(sorted(out, key=SCOPES.index))


def parse_collections(collections: str | Iterable[str]) -> tuple[str, ...]:
    """Collection names (or ``*`` for all), checked like collection names everywhere."""
    items = collections.split(",") if isinstance(collections, str) else list(collections)
    out: list[str] = []
    for c in items:
        c = c.strip() if isinstance(c, str) else c
        if c != ALL_COLLECTIONS:
            check_name("collection", c)
        if c not in out:
            out.append(c)
    if not out:
        raise InvalidInputError("a key needs at least one collection, or '*' for all")
    if ALL_COLLECTIONS in out:
        return (ALL_COLLECTIONS,)
    return tuple(out)


def _hash(secret: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${digest.hex()}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class KeyStore:
    """The API keys kept in one store's catalog."""

    def __init__(self, catalog: Catalog, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self.catalog = catalog
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, KeyInfo]] = {}
        self._cache_lock = threading.Lock()

    def create(
        self, name: str, scopes: str | Iterable[str], collections: str | Iterable[str] = ("*",)
    ) -> tuple[KeyInfo, str]:
        """Make a key; return its description and the token, which is shown only now."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidInputError(f"a key needs a name of 1-200 characters, not {name!r}")
        scope_list, collection_list = parse_scopes(scopes), parse_collections(collections)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        table = schema.api_keys
        with self.catalog.transaction() as conn:
            while True:
                key_id = "k_" + secrets.token_hex(4)
                taken = conn.execute(
                    sa.select(table.c.id).where(table.c.id == key_id)
                ).scalar_one_or_none()
                if taken is None:
                    break
            info = KeyInfo(key_id, name.strip(), scope_list, collection_list, _now())
            conn.execute(
                table.insert().values(
                    id=info.id,
                    name=info.name,
                    hash=_hash(secret, salt),
                    salt=salt.hex(),
                    scopes=json.dumps(list(info.scopes)),
                    collections=json.dumps(list(info.collections)),
                    created_at=info.created_at,
                )
            )
        return info, f"{TOKEN_PREFIX}{key_id}_{secret}"

    def list(self) -> list[KeyInfo]:
        """Every key, revoked ones included, oldest first."""
        table = schema.api_keys
        with self.catalog.reading() as conn:
            rows = conn.execute(sa.select(table).order_by(table.c.created_at, table.c.id)).all()
        return [_info(r) for r in rows]

    def get(self, key_id: str) -> KeyInfo:
        table = schema.api_keys
        with self.catalog.reading() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == key_id)).one_or_none()
        if row is None:
            raise NotFoundError(f"no API key {key_id!r}; `mmstore keys list` shows the keys")
        return _info(row)

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key for good (revoking twice keeps the first time)."""
        table = schema.api_keys
        with self.catalog.transaction() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == key_id)).one_or_none()
            if row is None:
                raise NotFoundError(f"no API key {key_id!r}; `mmstore keys list` shows the keys")
            if row.revoked_at is None:
                conn.execute(table.update().where(table.c.id == key_id).values(revoked_at=_now()))
        with self._cache_lock:
            self._cache.clear()
        return self.get(key_id)

    def cached(self, token: str) -> KeyInfo | None:
        """The key of a token verified within the last ``cache_seconds``, or None (without
        reading the catalog: cheap enough for the event loop)."""
        fingerprint = hashlib.sha256(token.encode()).digest()
        with self._cache_lock:
            hit = self._cache.get(fingerprint)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def verify(self, token: object) -> KeyInfo | None:
        """The key a token belongs to, or None when it is malformed, unknown, wrong or
        revoked. The secret is compared in constant time."""
        if not isinstance(token, str):
            return None
        match = _TOKEN_RE.match(token)
        if match is None:
            return None
        hit = self.cached(token)
        if hit is not None:
            return hit
        fingerprint = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        table = schema.api_keys
        with self.catalog.reading() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == match["id"])).one_or_none()
        if row is None:  # same work as for a known key, then fail
            hmac.compare_digest(_hash(match["secret"], _DUMMY_SALT), _hash("", _DUMMY_SALT))
            return None
        try:
            iterations = int(row.hash.split("$")[1])
            salt = bytes.fromhex(row.salt)
        except (IndexError, ValueError):
            return None
        if not hmac.compare_digest(_hash(match["secret"], salt, iterations), row.hash):
            return None
        if row.revoked_at is not None:
            return None
        info = _info(row)
        self._touch(info.id)
        if self.cache_seconds > 0:
            with self._cache_lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[fingerprint] = (now + self.cache_seconds, info)
        return info

    def _touch(self, key_id: str) -> None:
        """Record the last use (at most once per cache period per token; not on a
        read-only store, and not while a write is in flight, which a key check does not
        wait for: the next check past the cache period records it)."""
        if self.catalog.read_only or not self.catalog.lock.acquire(blocking=False):
            return
        table = schema.api_keys
        try:
            with self.catalog.transaction("recording a key's use", publish=False) as conn:
                conn.execute(table.update().where(table.c.id == key_id).values(last_used_at=_now()))
        except ReadOnlyError:
            pass
        finally:
            self.catalog.lock.release()


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        scopes=tuple(json.loads(row.scopes)),
        collections=tuple(json.loads(row.collections)),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
