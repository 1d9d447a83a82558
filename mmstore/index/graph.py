"""The HNSW graph (FAISS ``IndexHNSWFlat``) over the first positions of a field's index: it
holds the float32 vectors itself, and its search width is tuned to a recall target on
held-out vectors."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmstore.config import IndexOptions
from mmstore.index.backend import faiss, swig_ptr
from mmstore.index.topk import tune_width


class Graph:
    """An HNSW graph; labels are positions ``[0, ntotal)``."""

    kind = "hnsw"

    def __init__(self, dim: int, options: IndexOptions, index: Any = None) -> None:
        self.dim, self.options = dim, options
        if index is None:
            index = faiss.IndexHNSWFlat(dim, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = options.hnsw_ef_construction
        self.index = index
        self.width = 64
        self.tuned_recall: float | None = None
        self._params: dict[int, Any] = {}

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def floats(self) -> np.ndarray:
        """The graph's own vector storage, as a numpy view (no copy)."""
        if not self.ntotal:
            return np.empty((0, self.dim), np.float32)
        storage = faiss.downcast_index(self.index.storage)
        ptr = faiss.rev_swig_ptr(storage.get_xb(), self.ntotal * self.dim)
        return np.asarray(ptr).reshape(self.ntotal, self.dim)

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        return np.take(self.floats(), positions, axis=0)

    def clone(self) -> Graph:
        """An independent copy, graph and vectors, to extend while this one serves."""
        out = Graph(self.dim, self.options, faiss.clone_index(self.index))
        out.width, out.tuned_recall = self.width, self.tuned_recall
        return out

    def add(self, vectors: np.ndarray, vids: np.ndarray | None = None) -> None:
        """Add ``vectors`` at the next positions (``vids`` unused: the graph holds them)."""
        self.index.add(np.ascontiguousarray(vectors, np.float32))

    def tune(self, queries: np.ndarray) -> None:
        """Pick the search width on ``queries``, vectors not in the graph."""
        goal = self.options.target_recall
        self.width, self.tuned_recall = tune_width(self.index, queries, self.floats(), goal)

    def search_plain(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The hot path: the whole graph, nothing filtered (FAISS's own call, without its
        wrapper's checks and copies)."""
        n = len(queries)
        scores, labels = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
        ef = max(self.width, k)
        params = self._params.get(ef)
        if params is None:
            params = self._params[ef] = faiss.SearchParametersHNSW()
            params.efSearch = ef
        self.index.search_c(n, swig_ptr(queries), k, swig_ptr(scores), swig_ptr(labels), params)
        return scores, labels

    def search(
        self, queries: np.ndarray, k: int, selector: Any, selectivity: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search with a FAISS selector (a filter or the tombstones); a selective filter
        widens the search so that enough allowed vectors are met."""
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.width, k)
        if selectivity < 1.0:
            widened = max(self.width, k) / min(1.0, max(selectivity, 1e-3) * 4)
            params.efSearch = int(min(4096, widened))
        params.sel = selector
        scores, labels = self.index.search(queries, k, params=params)
        return scores, labels

    def params(self) -> dict[str, Any]:
        return {
            "M": self.options.hnsw_m,
            "efConstruction": self.options.hnsw_ef_construction,
            "efSearch": self.width,
        }

    def serialize(self) -> np.ndarray:
        return np.asarray(faiss.serialize_index(self.index))
