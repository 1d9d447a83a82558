"""Optimizing a field's index on a copy while the original serves searches: the graph is
cloned and extended with the tail, and the caller puts the copy in the original's place
under the gate (:meth:`mmstore.index.collection.CollectionIndexes.optimize`). Readers never
see an index being changed, and wait only for the swap, not for the build."""

from __future__ import annotations

import copy
import threading

from mmstore.index import subset
from mmstore.index.choose import outgrown
from mmstore.index.graph import Graph
from mmstore.index.vectors import VectorIndex


def optimized_copy(index: VectorIndex, seed: int = 0) -> VectorIndex | None:
    """``index`` optimized on a copy, ``index`` itself left as it was; None where only an
    optimize in place serves: no graph to extend, nothing in the tail, or a compaction or
    a new decision due (those rebuild from every vector). The caller holds the writer
    lock, so that nothing is added to or removed from ``index`` meanwhile."""
    graph = index.ann
    if not isinstance(graph, Graph) or index.size == index.n_base or index.compaction_due():
        return None
    if outgrown(index.decision, index.live):
        return None
    new = copy.copy(index)
    new.ann = graph.clone()
    new.vids, new.dead = index.vids.copy(), index.dead.copy()  # the hold-out reorders them
    new._gpu, new._gpu_lock, new._subsets = None, threading.Lock(), subset.SubsetCache()
    new.optimize(seed)
    return new
