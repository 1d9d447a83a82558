"""Records at the boundary: shape checks (id, label, ts, meta, known fields), limits, and the
content hashes that let an unchanged record skip re-encoding."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmstore.errors import RecordError

MAX_ID_CHARS = 512
MAX_META_BYTES = 64 * 1024
MAX_META_DEPTH = 16
STANDARD_KEYS = ("id", "label", "ts", "meta")


@dataclass
class Prepared:
    """A validated record, ready to be hashed, encoded and written."""

    id: str
    label: str | None
    ts: dt.datetime | None
    meta: str | None  # JSON text
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    content_hash: str = ""
    sources_json: str = ""

    def finish(self) -> Prepared:
        """Compute the stored sources and the content hash once all fields are in. The
        hash covers the sources too: the same bytes at a new referenced path are a change
        of the record (its row is rewritten), though not of its vectors."""
        kept = {k: v for k, v in self.sources.items() if v is not None}
        self.sources_json = (
            json.dumps(kept, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            if kept
            else "{}"
        )
        ts = self.ts.isoformat() if self.ts else ""
        parts = [repr(self.label), ts, self.meta or "", self.sources_json]
        parts += [f"{k}={v}" for k, v in sorted(self.hashes.items())]
        self.content_hash = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
        return self


def record_id(raw: Any, position: int) -> str:
    """The record's id as a string, or a RecordError naming its position."""
    if not isinstance(raw, Mapping):
        raise RecordError(f"#{position}", None, f"a record is a mapping, got {type(raw).__name__}")
    rid = raw.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
        raise RecordError(
            f"#{position}", "id", f"every record needs an id (a non-empty str or int), got {rid!r}"
        )
    try:
        rid = str(rid)
    except ValueError:  # an int of more digits than Python writes out
        raise RecordError(
            f"#{position}", "id", f"id longer than {MAX_ID_CHARS} characters"
        ) from None
    surrogate = _surrogate(rid)
    if surrogate is not None:  # named by position: the id itself cannot be written out
        raise RecordError(f"#{position}", "id", f"id {surrogate}")
    if len(rid) > MAX_ID_CHARS:
        raise RecordError(rid[:40] + "...", "id", f"id longer than {MAX_ID_CHARS} characters")
    return rid


def _surrogate(text: str) -> str | None:
    """Why ``text`` cannot be stored as UTF-8 (an unpaired surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"holds an unpaired surrogate at position {e.start}; it cannot be stored as UTF-8"
    return None


def _printable(name: str) -> str:
    """A key as it can be written out (unpaired surrogates as backslash escapes)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def check_keys(rid: str, raw: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
    unknown = [k for k in raw if k not in fields and k not in STANDARD_KEYS]
    if unknown:
        raise RecordError(
            rid,
            _printable(str(unknown[0])),
            "not a field of this collection; fields: "
            f"{sorted(fields)}; put other data under 'meta'",
        )
    for f in fields:  # a loop, not any(): this runs once per record of every ingest
        if raw.get(f) is not None:
            return
    raise no_fields(rid, fields)


def duplicate(rid: str) -> RecordError:
    return RecordError(
        rid,
        "id",
        "appears more than once in this ingest call; "
        "merge the duplicates or ingest them in separate calls",
    )


def no_fields(rid: str, fields: Mapping[str, Any]) -> RecordError:
    return RecordError(rid, None, f"record has none of the collection's fields {sorted(fields)}")


def parse_label(rid: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RecordError(rid, "label", f"label must be a str or int, got {type(value).__name__}")
    try:
        label = str(value)
    except ValueError:  # an int of more digits than Python writes out
        raise RecordError(rid, "label", "label is an int too large to write out") from None
    surrogate = _surrogate(label)
    if surrogate is not None:
        raise RecordError(rid, "label", f"label {surrogate}")
    return label


def parse_ts(rid: str, value: Any) -> dt.datetime | None:
    """A datetime (aware ones converted to UTC), an ISO 8601 string, or epoch seconds."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, bool):
        raise RecordError(rid, "ts", "timestamp must be a datetime, ISO string or epoch seconds")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise RecordError(rid, "ts", f"timestamp {value!r} is not finite")
        try:
            value = dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, ValueError, OSError):
            raise RecordError(
                rid, "ts", "timestamp in epoch seconds is out of range (years 1 to 9999)"
            ) from None
    elif isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as e:
            raise RecordError(rid, "ts", f"not an ISO 8601 timestamp: {value!r}") from e
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise RecordError(rid, "ts", f"timestamp must be a datetime, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def parse_meta(rid: str, value: Any) -> str | None:
    """Metadata: a JSON object of bounded size and depth, stored as JSON text."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RecordError(rid, "meta", f"meta must be a mapping, got {type(value).__name__}")
    _check_depth(rid, value, 1)
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise RecordError(rid, "meta", f"meta is not JSON-serializable: {e}") from e
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise RecordError(
            rid,
            "meta",
            "meta holds an unpaired surrogate in a key or string; it cannot be stored as UTF-8",
        ) from None
    if size > MAX_META_BYTES:
        raise RecordError(
            rid,
            "meta",
            f"meta is larger than {MAX_META_BYTES // 1024} KiB; "
            "keep large data in a field or elsewhere",
        )
    return text


def _check_depth(rid: str, value: Any, depth: int) -> None:
    if depth > MAX_META_DEPTH:
        raise RecordError(rid, "meta", f"meta is nested deeper than {MAX_META_DEPTH} levels")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise RecordError(rid, "meta", f"meta keys must be strings, got {k!r}")
            _check_depth(rid, v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_depth(rid, v, depth + 1)


def field_hash(fingerprint: str | bytes) -> str:
    data = fingerprint.encode() if isinstance(fingerprint, str) else fingerprint
    return hashlib.blake2b(data, digest_size=16).hexdigest()
