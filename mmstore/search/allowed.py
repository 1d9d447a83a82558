"""Which vectors of a field a filter (``where=``) allows: the catalog lists the matching
record ids, a map held in memory turns them into vids; answers are kept until the next
committed write, so that a filter used again (a category, a tenant) costs no query."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from mmstore.encoding.fields import Field
from mmstore.storage import embeddings, schema
from mmstore.storage.filters import compile_filter

if TYPE_CHECKING:
    from mmstore.state import CollectionState

#: filters whose matching vids are kept between writes
FILTERS_KEPT = 32


class AllowedVids:
    """The vids a filter allows, per field, for one collection."""

    def __init__(self, col: CollectionState) -> None:
        self.col = col
        self._vid_maps: dict[str, dict[str, int]] = {}
        #: (field, encoder key, filter as JSON) -> allowed vids, least recently used first
        self._allowed: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self._generation = -1  # of the hit cache, when the two caches above were filled
        self._lock = threading.Lock()  # readers in parallel share the two caches

    def __call__(self, tgt: Field, where: Mapping[str, Any]) -> np.ndarray:
        """Vids of the target field whose records match the filter, sorted (read-only)."""
        self._forget_if_written()
        key = _filter_key(tgt, where)
        with self._lock:
            kept = self._allowed.get(key) if key is not None else None
            if kept is not None:
                self._allowed.move_to_end(key)  # type: ignore[arg-type]
                return kept
        r = schema.records
        stmt = sa.select(r.c.id).where(r.c.collection == self.col.name, compile_filter(where, r))
        ids = self.col.store.catalog.select_arrow(stmt).column("id").to_pylist()
        vid_of = self._vid_map(tgt)
        vids = [v for v in map(vid_of.get, ids) if v is not None]
        allowed = np.sort(np.fromiter(vids, np.int64, len(vids)))
        allowed.flags.writeable = False  # shared by later searches with the same filter
        if key is not None:
            with self._lock:
                allowed = self._allowed.setdefault(key, allowed)  # one array per filter
                while len(self._allowed) > FILTERS_KEPT:
                    self._allowed.popitem(last=False)
        return allowed

    def forget(self) -> None:
        """Drop the kept answers (the next call of each filter asks the catalog)."""
        self._allowed.clear()

    def _vid_map(self, tgt: Field) -> dict[str, int]:
        """The target field's vid of each record id; rebuilt after a write."""
        self._forget_if_written()
        cached = self._vid_maps.get(tgt.name)
        if cached is None:
            catalog = self.col.store.catalog
            cached = embeddings.vid_by_record(catalog, self.col.name, tgt.name, tgt.key)
            cached = self._vid_maps.setdefault(tgt.name, cached)
        return cached

    def _forget_if_written(self) -> None:
        """Drop the vid maps and filter results once a write committed since they were
        read (the hit cache counts commits)."""
        generation = self.col.cache.generation
        if self._generation != generation:
            with self._lock:
                self._vid_maps.clear()
                self._allowed.clear()
                self._generation = generation


def _filter_key(tgt: Field, where: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """A filter as canonical JSON (values tagged with their type, so that ``1``, ``1.0``
    and ``True`` differ), or None when it does not serialize (it is then not kept)."""
    try:
        text = json.dumps(where, sort_keys=True, default=_tagged)
    except (TypeError, ValueError):
        return None
    return tgt.name, tgt.key, text


def _tagged(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return f"{type(value).__name__}:{value.isoformat()}"
    raise TypeError(f"not kept: {type(value).__name__}")
