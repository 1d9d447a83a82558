"""Which index a field gets once it passes ``ann_threshold``, decided before anything large
is built: from its size, its dimension and the memory budget a candidate kind, then that
kind built on a sample and tuned on held-out vectors; where the sample cannot reach the
recall target (data without neighbourhoods, such as uniform random vectors), the field
stays exact and no full index is built only to be thrown away."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmstore.config import IndexOptions
from mmstore.index.coarse import Coarse
from mmstore.index.graph import Graph

#: vectors the decision is tried on, and the held-out queries it is measured with
SAMPLE, QUERIES = 20_000, 200
#: a field is decided again once it has grown this many times past its decision
RETRAIN_GROWTH = 4
#: memory per vector of each kind, in multiples of its float32 bytes (codes, links, floats)
FOOTPRINT = {"hnsw": 1.2, "ivf_sq8": 1.3, "ivf_rabitq": 1.05}


@dataclass(frozen=True)
class Decision:
    """The kind chosen, why, and on how many vectors it was decided."""

    kind: str
    reason: str
    decided_at: int
    sample_recall: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def budget(options: IndexOptions) -> int:
    """The bytes the index may hold: the option, or half of this machine's memory."""
    if options.memory is not None:
        return options.memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def candidate(options: IndexOptions, n: int, dim: int) -> tuple[str, str]:
    """The kind the size and the budget point to, and why."""
    if options.kind != "auto":
        return options.kind, f"kind {options.kind!r} was asked for"
    floats, room = n * dim * 4, budget(options)
    if n <= options.graph_limit and floats * FOOTPRINT["hnsw"] <= room:
        return "hnsw", f"{n:,} vectors are within graph_limit {options.graph_limit:,}"
    if floats * FOOTPRINT["ivf_sq8"] <= room:
        return "ivf_sq8", f"{n:,} vectors are past graph_limit; 8-bit codes fit the memory"
    return "ivf_rabitq", f"{n:,} x {dim} float32 with 8-bit codes exceed the memory budget"


def decide(options: IndexOptions, vectors: np.ndarray, seed: int = 0) -> Decision:
    """The index for ``vectors`` (a field's vectors, in any order): the candidate kind
    tried on a sample first, unless the kind was asked for."""
    n, dim = vectors.shape
    kind, why = candidate(options, n, dim)
    if options.kind != "auto" or kind == "flat":
        return Decision(kind, why, n)
    reached = sample_recall(kind, options, vectors, seed)
    if reached < options.target_recall:
        return Decision(
            "flat",
            f"{kind} reached recall@10 {reached:.3f} on a sample of {min(n, SAMPLE):,}, "
            f"under the target {options.target_recall}: exact search",
            n,
            reached,
        )
    return Decision(kind, why, n, reached)


def sample_recall(kind: str, options: IndexOptions, vectors: np.ndarray, seed: int) -> float:
    """The recall@10 that ``kind``, built on a sample and tuned, reaches on held-out
    vectors of the same field."""
    n, dim = vectors.shape
    rng = np.random.default_rng(seed)
    take = min(n, SAMPLE + QUERIES)
    picked = vectors[np.sort(rng.choice(n, take, replace=False))]
    queries, base = picked[-min(QUERIES, take // 10) :], picked[: -min(QUERIES, take // 10)]
    index: Graph | Coarse
    if kind == "hnsw":
        index = Graph(dim, options)
    else:
        index = Coarse(kind, dim, options)
        index.train(base, seed)
    index.add(base)
    index.tune(queries)
    assert index.tuned_recall is not None
    return index.tuned_recall


def outgrown(decision: Decision | None, live: int) -> bool:
    """Whether a field of ``live`` vectors has grown ``RETRAIN_GROWTH`` times past its
    decision."""
    return decision is not None and live >= RETRAIN_GROWTH * decision.decided_at


def stays_exact(decision: Decision | None, live: int) -> bool:
    """Whether a field was decided exact at a size it has not outgrown since."""
    return decision is not None and decision.kind == "flat" and not outgrown(decision, live)
