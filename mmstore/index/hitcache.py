"""Hit fields served from memory: which record a vid belongs to, and each record's label,
timestamp, metadata and inline sources. Loaded from the catalog on first search as columns
(numpy vids, Arrow record columns: no object per record), kept in step by every committed
write through small overlays, so that a search makes no catalog query per hit."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mmstore.hits import Hit, Hits
from mmstore.storage import embeddings
from mmstore.storage.catalog import Catalog

_EMPTY = pa.array([], pa.string())


@dataclass(frozen=True)
class RecordRow:
    """The catalog's row of a record, as hits show it."""

    label: str | None
    ts: dt.datetime | None
    meta: str | None
    sources: str


class HitCache:
    """Maps vids to records and records to their fields, for one collection.

    A record has a stable number (``rec``: its row at load, then one per new record); a vid
    maps to its record's number (``_vids``/``_recs`` from the load, ``_extra`` since), and a
    number to the slot of the record's latest row (itself at load, ``_moved`` since)."""

    def __init__(self, catalog: Catalog, collection: str) -> None:
        self.catalog, self.collection = catalog, collection
        #: grows with every committed write: what is derived from the catalog and kept
        #: elsewhere (a searcher's filter results) is stale once it changed
        self.generation = 0
        self._loading = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._loaded = False
        self._vids, self._recs = np.empty(0, np.int64), np.empty(0, np.int64)
        self._extra: dict[int, int] = {}
        self._moved: dict[int, int] = {}
        self._ids = _Column(_EMPTY)
        self._rows = _Rows(tuple(_Column(_EMPTY) for _ in range(4)))
        self._rec_of: dict[str, int] | None = None  # built on the first write after a load

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ensure(self) -> None:
        """Load from the catalog if not loaded (by one reading thread; the others wait)."""
        if self._loaded:
            return
        with self._loading:
            if self._loaded:
                return
            vids, recs, records = embeddings.hit_rows(self.catalog, self.collection)
            self._clear()
            self._vids, self._recs = vids, np.array(recs, np.int64)  # a copy: deletes write it
            self._ids = _Column(records.column("id"))
            names = ("label", "ts", "meta", "sources")
            self._rows = _Rows(tuple(_Column(records.column(c)) for c in names))
            self._loaded = True

    def invalidate(self) -> None:
        self.generation += 1
        self._clear()

    def apply(
        self,
        rows: dict[str, RecordRow],
        added: Iterable[tuple[int, str]],
        removed_vids: Iterable[int],
        removed_ids: Iterable[str],
    ) -> None:
        """Mirror a committed write (only when loaded; otherwise the next load reads it)."""
        self.generation += 1
        if not self._loaded:
            return
        self._drop(np.fromiter(removed_vids, np.int64))
        rec_of = self._numbers()
        for rid in removed_ids:
            rec_of.pop(rid, None)
        for rid, row in rows.items():
            rec = rec_of.get(rid)
            if rec is None:
                rec = rec_of[rid] = self._ids.append(rid)
            self._moved[rec] = self._rows.append(row)
        for vid, rid in added:
            if rid not in rec_of:  # a vector of a record this cache never saw: reload
                self.invalidate()
                return
            self._extra[int(vid)] = rec_of[rid]

    def _drop(self, vids: np.ndarray) -> None:
        for vid in vids.tolist():
            self._extra.pop(vid, None)
        at, found = embeddings.found_at(self._vids, vids)
        self._recs[at[found]] = -1

    def _numbers(self) -> dict[str, int]:
        """Record id -> number, built from the loaded ids when first needed."""
        if self._rec_of is None:
            ids = self._ids.base.to_pylist()
            self._rec_of = dict(zip(ids, range(len(ids)), strict=True))
        return self._rec_of

    def _records(self, vids: np.ndarray) -> list[int]:
        """The record number of each vid, -1 where none (an empty slot's -1 included)."""
        out = embeddings.rows_of((self._vids, self._recs), vids)
        recs = out.tolist()
        if self._extra:
            for i in np.flatnonzero(out < 0).tolist():
                recs[i] = self._extra.get(int(vids[i]), -1)
        return recs

    def hits(
        self,
        field: str,
        modality: str,
        scores: Any,
        vids: Any,
        limit: int,
        exclude: str | None = None,
    ) -> Hits:
        """Hits for one result row, best first, skipping empty slots and ``exclude``."""
        self.ensure()
        out = Hits()
        ids, rows, moved = self._ids, self._rows, self._moved  # the loop is the hot path
        recs = self._records(np.asarray(vids, np.int64).ravel())
        for score, rec in zip(np.asarray(scores).ravel().tolist(), recs, strict=True):
            if rec < 0:
                continue
            rid = ids.get(rec)
            if rid == exclude:
                continue
            out.append(_LazyHit(rid, score, field, modality, rows, moved.get(rec, rec)))
            if len(out) == limit:
                break
        return out


class _Column:
    """One loaded column (Arrow, read a value at a time) and the values appended since."""

    __slots__ = ("base", "more", "n")

    def __init__(self, base: pa.Array | pa.ChunkedArray) -> None:
        self.base = base  # not combined: a copy of every value (0.08 s at 1M records)
        self.more: list[Any] = []
        self.n = len(self.base)

    def get(self, at: int) -> Any:
        return self.base[at].as_py() if at < self.n else self.more[at - self.n]

    def append(self, value: Any) -> int:
        self.more.append(value)
        return self.n + len(self.more) - 1


class _Rows:
    """The loaded columns of a collection's records and their parsed JSON. Rows are only
    appended while loaded (a rewritten record gets a new slot), and a reload makes a new
    ``_Rows``, so a slot read later gives what the record held when its hit was made."""

    __slots__ = ("columns", "parsed")

    def __init__(self, columns: tuple[_Column, ...]) -> None:
        self.columns = columns
        self.parsed: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def append(self, row: RecordRow) -> int:
        values = (row.label, row.ts, row.meta, row.sources)
        slots = [c.append(v) for c, v in zip(self.columns, values, strict=True)]
        return slots[0]

    def fields(self, slot: int) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
        """Label, timestamp and copies of the metadata and sources at ``slot``."""
        labels, stamps, metas, sources = self.columns
        parsed = self.parsed.get(slot)
        if parsed is None:
            meta = metas.get(slot)
            parsed = (json.loads(meta) if meta else {}, json.loads(sources.get(slot)))
            self.parsed[slot] = parsed
        return labels.get(slot), stamps.get(slot), dict(parsed[0]), dict(parsed[1])


def _deferred(name: str) -> property:
    """A property over :class:`Hit`'s slot ``name`` that fills the hit on first read."""
    slot = Hit.__dict__[name]

    def get(self: _LazyHit) -> Any:
        try:
            return slot.__get__(self, Hit)
        except AttributeError:  # not filled in yet
            self._fill()
            return slot.__get__(self, Hit)

    def put(self: _LazyHit, value: Any) -> None:
        self._fill()
        slot.__set__(self, value)

    return property(get, put)


class _LazyHit(Hit):
    """A search's hit, its record's fields read from the loaded columns on first use
    (a dataclass's ``asdict``, ``repr`` and ``==`` read them through the properties)."""

    __slots__ = ("_at", "_rows")
    _rows: _Rows | None  # None once filled

    def __init__(
        self, rid: str, score: float, field: str, modality: str, rows: _Rows, at: int
    ) -> None:
        self.id, self.score, self.field, self.modality = rid, score, field, modality
        self._rows, self._at = rows, at

    def _fill(self) -> None:
        if self._rows is None:
            return
        rows, self._rows = self._rows, None
        label, ts, meta, values = rows.fields(self._at)
        for name, value in zip(_FILLED, (label, ts, meta, values), strict=True):
            Hit.__dict__[name].__set__(self, value)

    def __repr__(self) -> str:
        return "Hit" + Hit.__repr__(self).removeprefix(type(self).__qualname__)

    def __reduce__(self) -> tuple[type[Hit], tuple[Any, ...]]:
        """Pickled and copied as a plain :class:`Hit` (without the collection's rows)."""
        return Hit, (self.id, self.score, self.field, self.modality, *self._filled())

    def _filled(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FILLED)

    label = _deferred("label")
    ts = _deferred("ts")
    meta = _deferred("meta")
    values = _deferred("values")


_FILLED = ("label", "ts", "meta", "values")
