"""The float32 vectors an IVF index rescores from, read where the catalog keeps them: the
rows of its field's segment file (:mod:`mmstore.storage.segments`), found by vid through
the catalog, mapped once and checked block by block before use, so that the index file
holds codes only and every float is stored once."""

from __future__ import annotations

import numpy as np

from mmstore.errors import DamagedVectorsError
from mmstore.storage import embeddings
from mmstore.storage.catalog import Catalog
from mmstore.storage.segments import Segment


class SegmentRows:
    """One field's space in its segment file (a :class:`mmstore.index.coarse.FloatRows`)."""

    def __init__(
        self,
        catalog: Catalog,
        collection: str,
        field: str,
        key: str,
        held: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """``held``: the field's :func:`~mmstore.storage.embeddings.live_rows` as read just
        now, for the first :meth:`rows` (a loading index reads them once for both)."""
        if catalog.segments is None:
            raise ValueError("an encrypted store keeps its vectors in the catalog, not in rows")
        self.catalog, self.files = catalog, catalog.segments
        self.collection, self.field, self.key = collection, field, key
        self._seg: Segment | None = None
        self._matrix = np.empty((0, 0), np.float32)
        self._held = held

    def rows(self, vids: np.ndarray) -> np.ndarray:
        held, self._held = self._held, None
        if held is None:
            held = embeddings.live_rows(self.catalog, self.collection, self.field, self.key)
        return embeddings.rows_of(held, vids)

    def take(self, rows: np.ndarray) -> np.ndarray:
        seg, matrix = self._mapped(int(rows.max()) if len(rows) else -1)
        return self.files.take(seg, matrix, rows)

    def refresh(self) -> None:
        """Map the file again at the next read (after a compaction replaced it)."""
        self._seg = None

    def _mapped(self, row: int) -> tuple[Segment, np.ndarray]:
        """The segment (as the catalog records it now) mapped, if the one mapped before
        does not reach ``row`` (it grew since)."""
        if self._seg is None or row >= self._seg.rows:
            with self.catalog.reading() as conn:
                seg = self.files.get(conn, self.collection, self.field, self.key)
            if seg is None or row >= seg.rows:
                found = "no segment" if seg is None else f"a segment of {seg.rows} rows"
                problem = f"the index reads row {row}, the catalog records {found}"
                store = str(self.catalog.path.parent)
                raise DamagedVectorsError(store, self.collection, self.field, problem)
            self._seg, self._matrix = seg, self.files.mapped(seg)
        return self._seg, self._matrix
