"""A record's stored vectors as queries (``record=``): which vectors it owns, the latest
live one of a field, and the NotFoundError when the record does not exist."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mmstore.encoding.fields import Field
from mmstore.storage import embeddings
from mmstore.storage import records as record_rows

if TYPE_CHECKING:
    from mmstore.state import CollectionState


def owned(col: CollectionState, rid: str) -> list[tuple[int, str]]:
    """The (vid, field) pairs of the record's stored vectors."""
    return embeddings.of_record(col.store.catalog, col.name, rid)


def latest(col: CollectionState, f: Field, vids: list[tuple[int, str]]) -> np.ndarray | None:
    """Of the record's ``vids``, the latest live vector of field ``f``, or None."""
    index = col.indexes.get(f)
    pos = index.positions(np.asarray([vid for vid, name in vids if name == f.name], np.int64))
    pos = np.sort(pos[~index.dead[pos]])
    if not len(pos):
        return None
    vector: np.ndarray = index.vectors_at(pos[-1:])[0]
    return vector


def require(col: CollectionState, rid: str) -> None:
    """Raise NotFoundError when the record does not exist."""
    with col.store.catalog.reading() as conn:
        record_rows.require(conn, col.name, [rid])
