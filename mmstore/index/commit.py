"""The one path every writer takes after its transaction commits: the loaded indexes and
the hit cache follow the committed change (ingest, re-embedding, deletes all describe what
they wrote as a :class:`Change`). The catalog lock is held by the caller, from before the
commit until this returns, so that no search sees the catalog and the caches disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mmstore.encoding.fields import Field
from mmstore.index.collection import CollectionIndexes
from mmstore.index.hitcache import HitCache, RecordRow


@dataclass
class Change:
    """What one commit wrote, as the in-memory caches need it."""

    #: vectors written, per space: (the field's space, vids, vectors)
    added: list[tuple[Field, np.ndarray, np.ndarray]] = field(default_factory=list)
    #: vids deleted, per field name (from every loaded space of the field)
    removed: dict[str, np.ndarray] = field(default_factory=dict)
    #: spaces (field name, encoder key) whose vectors were all deleted
    dropped: list[tuple[str, str]] = field(default_factory=list)
    #: records written (their rows, as hits show them) and deleted
    rows: dict[str, RecordRow] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    #: vid -> record id of the vectors written; vids of every vector that went
    owners: list[tuple[int, str]] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    #: spaces too large to mirror from memory: reloaded from the catalog instead
    reload: list[Field] = field(default_factory=list)
    #: the spaces to save when enough changes are unsaved (None: no save now)
    save: Mapping[str, Field] | None = None


def after_commit(indexes: CollectionIndexes, cache: HitCache, change: Change) -> None:
    """Bring the loaded indexes and the hit cache in line with a committed change."""
    for name, vids in change.removed.items():
        if len(vids):
            indexes.remove_everywhere(name, vids)
    for f in change.reload:
        indexes.forget(f.name)
        indexes.get(f)
    for f, vids, vectors in change.added:
        indexes.apply(f, (vids, vectors), np.empty(0, np.int64))
    for name, key in change.dropped:
        indexes.forget(name, key)
    if change.reload:
        cache.invalidate()
    else:
        cache.apply(change.rows, change.owners, change.gone, change.deleted)
    if change.save is not None:
        indexes.maybe_save(change.save)
