"""Hit fields served from memory: which record a vid belongs to, and each record's label,
timestamp, metadata and inline sources. Loaded from the catalog on first search (as
columns, without an object per record), kept in step by every committed write, so that a
search makes no catalog query per hit."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mmstore.hits import Hit, Hits
from mmstore.storage import embeddings
from mmstore.storage.catalog import Catalog


@dataclass(frozen=True)
class RecordRow:
    """The catalog's row of a record, as hits show it."""

    label: str | None
    ts: dt.datetime | None
    meta: str | None
    sources: str


class HitCache:
    """Maps vids to record ids and record ids to their fields, for one collection."""

    def __init__(self, catalog: Catalog, collection: str) -> None:
        self.catalog, self.collection = catalog, collection
        self._loaded = False
        self.owner: dict[int, str] = {}
        self._slot: dict[str, int] = {}
        self._rows = _Rows(([], [], [], []))
        #: grows with every committed write: what is derived from the catalog and kept
        #: elsewhere (a searcher's filter results) is stale once it changed
        self.generation = 0

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ensure(self) -> None:
        if self._loaded:
            return
        self.owner = embeddings.record_by_vid(self.catalog, self.collection)
        rec = self.catalog.query_arrow(
            "SELECT id, label, ts, meta, sources FROM mms_records WHERE collection = ?",
            [self.collection],
        )
        ids = rec.column("id").to_pylist()
        self._slot = dict(zip(ids, range(len(ids)), strict=True))
        columns = ("label", "ts", "meta", "sources")
        self._rows = _Rows(tuple(rec.column(c).to_pylist() for c in columns))
        self._loaded = True

    def invalidate(self) -> None:
        self.generation += 1
        self._loaded = False
        self.owner, self._slot = {}, {}
        self._rows = _Rows(([], [], [], []))

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
        for vid in removed_vids:
            self.owner.pop(int(vid), None)
        for rid in removed_ids:
            self._slot.pop(rid, None)
        self.owner.update(added)
        labels, stamps, metas, sources = self._rows.columns
        for rid, row in rows.items():
            self._slot[rid] = len(labels)
            labels.append(row.label)
            stamps.append(row.ts)
            metas.append(row.meta)
            sources.append(row.sources)

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
        owner, slots, rows = self.owner, self._slot, self._rows  # the loop is the hot path
        for score, vid in zip(scores.tolist(), vids.tolist(), strict=True):
            rid = owner.get(vid)  # None for the -1 of an empty slot too
            if rid is None or rid == exclude:
                continue
            out.append(_LazyHit(rid, score, field, modality, rows, slots[rid]))
            if len(out) == limit:
                break
        return out

    def hit(self, rid: str, score: float, field: str, modality: str) -> Hit:
        return _LazyHit(rid, score, field, modality, self._rows, self._slot[rid])


class _Rows:
    """The loaded columns of a collection's records and their parsed JSON. Rows are only
    appended while loaded (a rewritten record gets a new slot), and a reload makes a new
    ``_Rows``, so a slot read later gives what the record held when its hit was made."""

    __slots__ = ("columns", "parsed")

    def __init__(self, columns: tuple[list[Any], ...]) -> None:
        self.columns = columns
        self.parsed: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def fields(self, slot: int) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
        """Label, timestamp and copies of the metadata and sources at ``slot``."""
        labels, stamps, metas, sources = self.columns
        parsed = self.parsed.get(slot)
        if parsed is None:
            meta = json.loads(metas[slot]) if metas[slot] else {}
            parsed = self.parsed[slot] = (meta, json.loads(sources[slot]))
        return labels[slot], stamps[slot], dict(parsed[0]), dict(parsed[1])


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
