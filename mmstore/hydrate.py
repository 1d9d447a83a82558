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

from mmstore.catalog import Catalog
from mmstore.hits import Hit, Hits


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
        self._columns: tuple[list[Any], ...] = ([], [], [], [])
        self._parsed: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ensure(self) -> None:
        if self._loaded:
            return
        emb = self.catalog.query_arrow(
            "SELECT vid, record_id FROM mms_embeddings WHERE collection = ?", [self.collection]
        )
        self.owner = dict(
            zip(emb.column("vid").to_pylist(), emb.column("record_id").to_pylist(), strict=True)
        )
        rec = self.catalog.query_arrow(
            "SELECT id, label, ts, meta, sources FROM mms_records WHERE collection = ?",
            [self.collection],
        )
        ids = rec.column("id").to_pylist()
        self._slot = dict(zip(ids, range(len(ids)), strict=True))
        self._columns = tuple(rec.column(c).to_pylist() for c in ("label", "ts", "meta", "sources"))
        self._parsed = {}
        self._loaded = True

    def invalidate(self) -> None:
        self._loaded = False
        self.owner, self._slot, self._parsed = {}, {}, {}
        self._columns = ([], [], [], [])

    def apply(
        self,
        rows: dict[str, RecordRow],
        added: Iterable[tuple[int, str]],
        removed_vids: Iterable[int],
        removed_ids: Iterable[str],
    ) -> None:
        """Mirror a committed write (only when loaded; otherwise the next load reads it)."""
        if not self._loaded:
            return
        for vid in removed_vids:
            self.owner.pop(int(vid), None)
        for rid in removed_ids:
            self._slot.pop(rid, None)
        self.owner.update(added)
        labels, stamps, metas, sources = self._columns
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
        for score, vid in zip(scores.tolist(), vids.tolist(), strict=True):
            if vid < 0:
                continue
            rid = self.owner.get(vid)
            if rid is None or rid == exclude:
                continue
            out.append(self.hit(rid, float(score), field, modality))
            if len(out) == limit:
                break
        return out

    def hit(self, rid: str, score: float, field: str, modality: str) -> Hit:
        slot = self._slot[rid]
        labels, stamps, metas, sources = self._columns
        parsed = self._parsed.get(slot)
        if parsed is None:
            meta = json.loads(metas[slot]) if metas[slot] else {}
            parsed = self._parsed[slot] = (meta, json.loads(sources[slot]))
        return Hit(
            id=rid,
            score=score,
            field=field,
            modality=modality,
            label=labels[slot],
            ts=stamps[slot],
            meta=dict(parsed[0]),
            values=dict(parsed[1]),
        )
