"""The vector index of one field: an exact tail that takes new vectors at memory speed and,
once the field is large, an approximate index over the rest (an HNSW graph,
:mod:`mmstore.index.graph`, or an IVF index with compressed codes rescored from float32,
:mod:`mmstore.index.coarse`), chosen on a sample before it is built
(:mod:`mmstore.index.choose`) and tuned to a recall target on held-out vectors. Deletes are
tombstones until the next compaction.

A vector's position is its label in the approximate index (or its place in the tail); vids
grow with every write, and a sorter maps vids to positions by binary search. A filter's rows
are kept gathered between writes (:mod:`mmstore.index.subset`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from mmstore.config import IndexOptions
from mmstore.errors import BeyondGpuError
from mmstore.index import exact, gpu, subset
from mmstore.index.choose import Decision, decide, outgrown, stays_exact
from mmstore.index.coarse import Coarse, FloatRows
from mmstore.index.graph import Graph
from mmstore.index.selection import bitmap_selector
from mmstore.index.topk import SearchResult, best_by_vid, held_last, merge, pad

#: a filtered search scans the matching rows exactly when there are at most this many
EXACT_SUBSET = 20_000
TUNE_QUERIES = 200
#: extra candidates a GPU search returns, to break ties by vid as the CPU does
GPU_TIE_SLACK = 16
log = logging.getLogger(__name__)


class VectorIndex:
    """An in-memory index of one field's vectors; see the module docstring."""

    def __init__(self, dim: int, options: IndexOptions | None = None) -> None:
        self.dim = dim
        self.options = options or IndexOptions()
        self.vids = np.empty(0, np.int64)
        self.dead = np.zeros(0, bool)
        self.ann: Graph | Coarse | None = None  # over positions [0, n_base)
        #: the kind chosen for this field, why, and at what size (None: not decided yet)
        self.decision: Decision | None = None
        self._tail = np.empty((0, dim), np.float32)
        self._tail_len = 0
        self._sorter = np.empty(0, np.int64)
        self.n_dead = 0
        self._gpu: Any = None  # a gpu.GpuMirror once an unfiltered search runs on a GPU
        self._gpu_lock = threading.Lock()
        #: where an IVF index reads its float32 vectors, when not from memory (a store's
        #: segment files); set by the store, kept across rebuilds
        self.source: FloatRows | None = None
        #: a new number at every change (:data:`mmstore.index.subset.versions`)
        self.version = next(subset.versions)
        self._subsets = subset.SubsetCache()

    @property
    def n_base(self) -> int:
        return 0 if self.ann is None else self.ann.ntotal

    @property
    def hnsw(self) -> Any:  # the FAISS graph when the approximate index is HNSW
        return self.ann.index if isinstance(self.ann, Graph) else None

    @property
    def ef_search(self) -> int:  # the tuned width: the graph's ef, or the lists IVF probes
        return 64 if self.ann is None else self.ann.width

    @property
    def tuned_recall(self) -> float | None:
        return None if self.ann is None else self.ann.tuned_recall

    @property
    def size(self) -> int:
        return len(self.vids)

    @property
    def live(self) -> int:
        return int(self.size - self.dead.sum())

    @property
    def kind(self) -> str:
        return "flat" if self.ann is None else self.ann.kind

    @property
    def last_vid(self) -> int:
        return int(self.vids[self._sorter[-1]]) if len(self.vids) else 0

    def live_vids(self) -> np.ndarray:
        return self.vids[~self.dead]

    # -- writes -------------------------------------------------------------------------
    def add(self, vids: np.ndarray, vectors: np.ndarray, *, adopt: bool = False) -> None:
        """Append vectors whose vids are all larger than any already held. With ``adopt``
        the index may keep ``vectors`` itself instead of a copy (the caller lets go of it)."""
        vids = np.asarray(vids, np.int64)
        if not len(vids):
            return
        if (len(self.vids) and vids[0] <= self.last_vid) or np.any(np.diff(vids) <= 0):
            raise ValueError("vids must be increasing and newer than the index's last vid")
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(len(vids), self.dim)
        need = self._tail_len + len(vids)
        if adopt and self._tail_len == 0:
            self._tail = vectors
        elif need > len(self._tail):
            grown = np.empty((max(need, 2 * len(self._tail), 1024), self.dim), np.float32)
            grown[: self._tail_len] = self._tail[: self._tail_len]
            self._tail = grown
        if self._tail is not vectors:
            self._tail[self._tail_len : need] = vectors
        self._tail_len = need
        new = np.arange(len(self.vids), len(self.vids) + len(vids))
        self._sorter = np.concatenate([self._sorter, new])
        self.vids = np.concatenate([self.vids, vids])
        self.dead = np.concatenate([self.dead, np.zeros(len(vids), bool)])
        self.version = next(subset.versions)

    def remove(self, vids: np.ndarray) -> int:
        """Tombstone vids (unknown ones are ignored); return how many were live."""
        pos = self.positions(np.asarray(vids, np.int64))
        newly = int((~self.dead[pos]).sum())
        self.dead[pos] = True
        self.n_dead += newly
        self.version = next(subset.versions)
        return newly

    def positions(self, vids: np.ndarray) -> np.ndarray:
        """Positions of the given vids that the index holds."""
        idx = np.searchsorted(self.vids, vids, sorter=self._sorter)
        ok = idx < len(self.vids)
        pos = self._sorter[idx[ok]]
        return pos[self.vids[pos] == vids[ok]]

    # -- vectors ------------------------------------------------------------------------
    def _base_blocks(self) -> Iterable[np.ndarray]:
        """The float32 vectors of the approximate index's positions, in order: one view
        where they are in memory, else read block by block."""
        if self.ann is None:
            return []
        if isinstance(self.ann, Coarse) and self.ann.source is not None:
            return self.ann.blocks()
        return [self.ann.floats()]

    def tail(self) -> np.ndarray:
        return self._tail[: self._tail_len]

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at sorted positions, gathered with one ``take`` per region."""
        split = int(np.searchsorted(positions, self.n_base))
        base = positions[:split]
        parts = [
            self.ann.vectors(base) if self.ann is not None else np.empty((0, self.dim), np.float32),
            np.take(self.tail(), positions[split:] - self.n_base, axis=0),
        ]
        return parts[0] if split == len(positions) else np.concatenate(parts)

    def all_vectors(self) -> np.ndarray:
        if not self.n_base:
            return self.tail()
        return np.concatenate([*self._base_blocks(), self.tail()])

    # -- search -------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> SearchResult:
        """Top ``k`` live vectors by inner product; ``allowed`` restricts to vids."""
        queries = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        if allowed is not None:
            pos, rows = self._allowed_rows(np.asarray(allowed, np.int64))
            if len(pos) <= EXACT_SUBSET or not self.serves_graph:
                return self._exact(queries, k, pos, rows)
            return self._ann(queries, k, pos)
        if self.size and gpu.resolve(self.options.device) == "cuda":
            return self._on_gpu(queries, k)
        if not self.serves_graph:
            return self._exact(queries, k, None)
        if self._tail_len == 0 and self.n_dead == 0:
            return self._ann_plain(queries, k)
        return self._ann(queries, k, None)

    def _allowed_rows(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The live positions of ``allowed`` vids, and their vectors where a filter's answer
        small enough for an exact scan is kept gathered (:mod:`mmstore.index.subset`)."""
        gather = self.vectors_at if len(allowed) <= EXACT_SUBSET or not self.serves_graph else None
        budget = subset.budget(self.size, self.dim)
        return self._subsets.rows(allowed, self.version, self._live_positions, gather, budget)

    def _live_positions(self, vids: np.ndarray) -> np.ndarray:
        pos = np.sort(self.positions(vids))
        return pos[~self.dead[pos]]

    @property
    def serves_graph(self) -> bool:
        """Whether searches use the approximate index: there is one, and its tuning reached
        the target recall (on data without structure, random vectors, an exact scan
        answers at recall 1.0 and no slower: 7.5 ms, the graph 8.3 ms at recall 0.85)."""
        if self.ann is None:
            return False
        return self.tuned_recall is None or self.tuned_recall >= self.options.target_recall

    def _on_gpu(self, queries: np.ndarray, k: int) -> SearchResult:
        """Exact search of the GPU mirror, brought up to date first. The GPU returns a few
        more than ``k`` candidates so that ties are broken by vid, as on the CPU; a query
        whose tie spills past them is answered by the CPU scan. If the GPU runs out of
        memory, this index searches on the CPU from then on."""
        try:
            with self._gpu_lock:
                if self._gpu is None:
                    self._gpu = gpu.mirror(self.dim)
                self._gpu.sync(self._rows, self.size, self.dead)
                scores, pos = self._gpu.search(queries, k + GPU_TIE_SLACK)
        except BeyondGpuError:  # a k that FAISS's GPU indexes do not serve
            return self._exact(queries, k, None)
        except gpu.out_of_memory() as e:
            log.warning(
                "GPU out of memory for a %d-vector index; searching on the CPU: %s", self.size, e
            )
            self._gpu, self.options = None, self.options.model_copy(update={"device": "cpu"})
            return self.search(queries, k)
        out, spill = best_by_vid(scores, np.where(pos >= 0, self.vids[np.maximum(pos, 0)], -1), k)
        return exact.rescan(out, spill, queries, k, self._blocks(), self.dead, self.vids)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        return self.vectors_at(np.arange(start, stop))

    def _ann_plain(self, queries: np.ndarray, k: int) -> SearchResult:
        """The hot path: the whole index is the approximate one with nothing deleted."""
        assert self.ann is not None
        kk = min(k, self.n_base)
        if isinstance(self.ann, Graph):
            scores, labels = self.ann.search_plain(queries, kk)
        else:
            scores, labels = self.ann.search(queries, kk)
        vids = np.where(labels >= 0, self.vids[np.maximum(labels, 0)], -1)
        return pad(SearchResult(scores, vids), k)

    def _exact(
        self,
        queries: np.ndarray,
        k: int,
        positions: np.ndarray | None,
        rows: np.ndarray | None = None,
    ) -> SearchResult:
        """An exact scan of every live vector, or of ``positions`` (whose vectors ``rows``
        are, when the caller has them; else gathered once for all the query blocks)."""
        if positions is not None:  # the filter's rows only: the full blocks are not read
            rows = self.vectors_at(positions) if rows is None else rows
            return exact.search(queries, k, [], self.dead, self.vids, positions, rows)
        return exact.search(queries, k, self._blocks(), self.dead, self.vids)

    def _blocks(self) -> list[np.ndarray]:
        return [*self._base_blocks(), self.tail()]

    def _tail_scan(self, queries: np.ndarray, k: int) -> SearchResult:
        """An exact scan of the tail where it lies (no rows gathered: a copy of a large
        tail on every search cost more than the scan)."""
        live = slice(self.n_base, self.n_base + self._tail_len)
        return exact.search(queries, k, [self.tail()], self.dead[live], self.vids[live])

    def _ann(self, queries: np.ndarray, k: int, positions: np.ndarray | None) -> SearchResult:
        assert self.ann is not None
        base_pos = positions[positions < self.n_base] if positions is not None else None
        selector, selectivity, keep = bitmap_selector(self.dead[: self.n_base], base_pos)
        kk = min(k, self.n_base)
        scores, labels = self.ann.search(queries, kk, selector, selectivity)
        del keep  # the bitmap outlived the search
        if positions is None:
            tail = self._tail_scan(queries, k)
        else:
            tail = self._exact(queries, k, positions[positions >= self.n_base])
        found = labels >= 0
        base = SearchResult(
            np.where(found, scores, -np.inf).astype(np.float32),
            np.where(found, self.vids[np.maximum(labels, 0)], -1),
        )
        result = merge(base, tail, k)
        if positions is not None and (result.vids < 0).any() and len(positions) >= k:
            return self._exact(queries, k, positions)
        return result

    # -- maintenance --------------------------------------------------------------------
    def needs_optimize(self) -> bool:
        """Whether ``optimize`` would change anything worth the time."""
        big = self.live >= self.options.ann_threshold
        due = big and self._tail_len >= max(1, self.n_base // 10) and not self._stays_exact()
        return due or (self.size > 0 and self.dead.mean() > 0.2)

    def _stays_exact(self) -> bool:
        if self.ann is not None or self.options.kind == "flat":
            return self.ann is None
        return stays_exact(self.decision, self.live)

    def compaction_due(self) -> bool:
        return bool(self.dead.any()) and (
            self.dead.mean() > 0.2 or self.live < self.options.ann_threshold
        )

    def optimize(self, seed: int = 0) -> None:
        """Compact tombstones; once the field is large, choose its approximate index on a
        sample (:func:`mmstore.index.choose.decide`), then build or extend it. The search
        width is tuned on a held-out sample of the new vectors: they are searched for
        before they join the index, as queries from outside it would be."""
        if self.compaction_due():
            self._compact()
        if self.live < self.options.ann_threshold or self._tail_len == 0:
            return
        if self.ann is not None and outgrown(self.decision, self.live):
            self._decide_again(seed)
        if self.ann is None:
            if self._stays_exact():
                return
            self.decision = decide(self.options, self.tail(), seed)
            if self.decision.kind == "flat":
                return
            self.ann = self._new_ann(self.decision.kind, seed)
        held = self._hold_out(seed)
        tail, vids = self.tail(), self.vids[self.n_base :]
        split = len(tail) - held
        self.ann.add(tail[:split], vids[:split])
        if held:
            self.ann.tune(tail[split:])
            self.ann.add(tail[split:], vids[split:])
        self._tail = np.empty((0, self.dim), np.float32)
        self._tail_len = 0
        self._gpu = None  # positions may have moved: the mirror is rebuilt on next use
        self.version = next(subset.versions)

    def _new_ann(self, kind: str, seed: int) -> Graph | Coarse:
        if kind == "hnsw":
            return Graph(self.dim, self.options)
        coarse = Coarse(kind, self.dim, self.options)
        coarse.train(self.tail(), seed)
        if self.source is not None:
            coarse.bind(self.source, np.empty(0, np.int64))
        return coarse

    def _decide_again(self, seed: int) -> None:
        """Decide on the grown field; an IVF index (whose lists were trained for the old
        size) or a change of kind is rebuilt from every live vector, a graph extended."""
        decision = decide(self.options, self.all_vectors()[~self.dead], seed)
        if decision.kind == self.kind and isinstance(self.ann, Graph):
            self.decision = decision
            return
        self._compact(rebuild=True)
        self.decision = decision

    def _hold_out(self, seed: int) -> int:
        """Move a random sample of the tail to its end; return its size."""
        n = self._tail_len
        held = min(TUNE_QUERIES, n // 10)
        if held == 0:
            return 0
        order = held_last(n, held, seed)
        start = self.n_base
        self._tail = self._tail[:n][order]  # a new array: a loaded tail is read-only
        self.vids[start:] = self.vids[start:][order]
        self.dead[start:] = self.dead[start:][order]
        self._sorter = np.argsort(self.vids, kind="stable")
        return held

    def _compact(self, rebuild: bool = False) -> None:
        """Drop tombstones; the live vectors go back to the tail. The decision is kept
        (a field decided exact stays exact) unless the index is to be ``rebuild``."""
        keep = ~self.dead
        order = np.argsort(self.vids[keep], kind="stable")
        vectors, vids = self.all_vectors()[keep][order], self.vids[keep][order]
        decision = None if rebuild else self.decision
        source = self.source
        self.__init__(self.dim, self.options)  # type: ignore[misc]
        self.decision, self.source = decision, source
        self.add(vids, vectors)

    def tune(self, queries: np.ndarray) -> None:
        """Pick the approximate index's search width on ``queries``, vectors not in it."""
        assert self.ann is not None
        self.ann.tune(queries)

    def params(self) -> dict[str, Any]:
        """What the manifest and ``col.info()`` record about how this index was built."""
        out: dict[str, Any] = {"kind": self.kind, "size": self.size, "live": self.live}
        out["gpu_layout"] = gpu.layout(self._gpu, self.size, self.dim, self.options.device)
        if self.decision is not None:
            out["decision"] = self.decision.as_dict()
        if self.ann is not None:
            served = "graph" if self.kind == "hnsw" else "index"
            out |= self.ann.params() | {
                "tuned_recall@10": self.tuned_recall,
                "search": served if self.serves_graph else "exact (tuning missed the target)",
            }
        return out
