"""Hit fields served from memory: which record a vid belongs to, and each record's label,
timestamp, metadata and inline sources. Loaded from the catalog on first search, kept in step
by every committed write, so a search makes no catalog query per hit."""

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
    """The catalog's row of a record, as hits show it (JSON parsed on demand)."""

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
        self.rows: dict[str, RecordRow] = {}

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
        columns = [rec.column(c).to_pylist() for c in ("id", "label", "ts", "meta", "sources")]
        self.rows = {i: RecordRow(lb, ts, m, s) for i, lb, ts, m, s in zip(*columns, strict=True)}
        self._loaded = True

    @property
    def loaded(self) -> bool:
        return self._loaded

    def invalidate(self) -> None:
        self._loaded = False
        self.owner, self.rows = {}, {}

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
            self.rows.pop(rid, None)
        self.owner.update(added)
        self.rows.update(rows)

    def hits(
        self, field: str, scores: Any, vids: Any, limit: int, exclude: str | None = None
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
            out.append(self.hit(rid, float(score), field))
            if len(out) == limit:
                break
        return out

    def hit(self, rid: str, score: float, field: str) -> Hit:
        row = self.rows[rid]
        return Hit(
            id=rid,
            score=score,
            field=field,
            label=row.label,
            ts=row.ts,
            meta=json.loads(row.meta) if row.meta else {},
            values={k: v for k, v in json.loads(row.sources).items() if v is not None},
        )
