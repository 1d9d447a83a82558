"""Exact search spread over the GPUs of one host with FAISS's own classes: the layout
(one GPU, replicas, shards) chosen by size, and the flat inner-product index assembled from
per-GPU sub-indexes (``faiss.IndexReplicas`` or ``faiss.IndexShards``).

Replicas when one GPU's free memory holds the vectors with headroom: every GPU holds them
all and queries are split among the GPUs (throughput). Shards when it does not: each GPU
holds a contiguous block of rows and every query runs on all of them (capacity). One GPU
keeps the PyTorch mirror of :mod:`mmstore.index.gpu`. The sub-index factory is a parameter, so
the same assembly runs with CPU ``IndexFlatIP`` sub-indexes in tests (FAISS's replicas and
shards accept any index).
"""

from __future__ import annotations

import functools
import math
import operator
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from mmstore.errors import BeyondGpuError, GpuMemoryError, InvalidInputError
from mmstore.index.backend import faiss

#: the share of a GPU's free memory that the vectors may take; the rest is for the query
#: batch's score tiles, FAISS's temporary memory and the other processes' growth
HEADROOM = 0.8
#: the largest k a FAISS GPU index returns (``GPU_MAX_SELECTION_K``)
GPU_MAX_K = 2048
#: tombstoned rows a mirror may hold (searched past) before it is rebuilt without them
MAX_DEAD_HELD = 1024
Mode = Literal["single", "replicate", "shard"]
#: ``(rank, dim) -> an empty flat inner-product index``; None means FAISS GPU indexes,
#: one per device; tests set CPU ones
SubIndexFactory = Callable[[int, int], Any]
SUB_INDEX: SubIndexFactory | None = None


@dataclass(frozen=True)
class Layout:
    """How a field's vectors sit on the GPUs: ``mode`` over ``gpus`` devices, the bytes
    each holds, and whether that fits in ``HEADROOM`` of the free memory."""

    mode: Mode
    gpus: int
    bytes_per_gpu: int
    fits: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_layout(
    n_vectors: int, dim: int, gpu_memory: int, n_gpus: int, *, headroom: float = HEADROOM
) -> Layout:
    """The layout for ``n_vectors`` float32 vectors of ``dim`` on ``n_gpus`` GPUs with
    ``gpu_memory`` free bytes each (the smallest, where they differ): one GPU is
    ``single``; several ``replicate`` when one holds the vectors within ``headroom`` of
    its memory, else ``shard`` (``fits`` says whether a shard does)."""
    n_vectors, dim = _count("n_vectors", n_vectors, 0), _count("dim", dim, 1)
    gpu_memory, n_gpus = _count("gpu_memory", gpu_memory, 1), _count("n_gpus", n_gpus, 1)
    if not 0.0 < headroom <= 1.0:
        raise InvalidInputError(f"headroom must be in (0, 1], got {headroom!r}")
    total, usable = n_vectors * dim * 4, int(gpu_memory * headroom)
    if n_gpus == 1:
        return Layout("single", 1, total, total <= usable)
    if total <= usable:
        return Layout("replicate", n_gpus, total, True)
    per_gpu = math.ceil(total / n_gpus)
    return Layout("shard", n_gpus, per_gpu, per_gpu <= usable)


def _count(name: str, value: Any, least: int) -> int:
    """``value`` as an int no smaller than ``least``; InvalidInputError otherwise."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < least:
        raise InvalidInputError(f"{name} must be an integer >= {least}, got {value!r}")
    return number


# -- the host ---------------------------------------------------------------------------------
def gpu_count() -> int:
    """GPUs that FAISS sees (0 where its GPU runtime cannot start)."""

    try:
        return int(faiss.get_num_gpus())
    except (AttributeError, RuntimeError):
        return 0


def free_memory(n_gpus: int) -> int:
    """The smallest free memory, in bytes, among the first ``n_gpus`` GPUs."""
    import torch

    return min(int(torch.cuda.mem_get_info(i)[0]) for i in range(n_gpus))


def plan(n_vectors: int, dim: int) -> Layout:
    """The layout for this host's GPUs (``gpu_count``, ``free_memory``)."""
    n = gpu_count()
    return choose_layout(n_vectors, dim, free_memory(n), n)


@functools.cache
def _resources(rank: int) -> Any:

    return faiss.StandardGpuResources()


def gpu_flat(rank: int, dim: int) -> Any:
    """An empty FAISS GPU flat inner-product index on device ``rank``."""

    config = faiss.GpuIndexFlatConfig()
    config.device = rank
    return faiss.GpuIndexFlatIP(_resources(rank), dim, config)


def cpu_flat(rank: int, dim: int) -> Any:
    """An empty CPU flat inner-product index (the factory tests use)."""

    return faiss.IndexFlatIP(dim)


# -- assembly ---------------------------------------------------------------------------------
def assemble(layout: Layout, dim: int, make_sub: SubIndexFactory) -> tuple[Any, list[Any]]:
    """An empty index laid out as ``layout`` and its sub-indexes (held by the caller:
    FAISS's containers do not own them)."""

    subs = [make_sub(rank, dim) for rank in range(layout.gpus)]
    if layout.mode == "single":
        return subs[0], subs
    if layout.mode == "replicate":
        index = faiss.IndexReplicas(dim, True)
        for sub in subs:
            index.addIndex(sub)
        return index, subs
    index = faiss.IndexShards(dim, True, True)  # threaded, successive ids
    for sub in subs:
        index.add_shard(sub)
    return index, subs


def fill(layout: Layout, index: Any, subs: list[Any], rows: np.ndarray, quota: int = 0) -> None:
    """Append ``rows`` after those the index holds, keeping labels equal to row order:
    replicas each take them all; shards fill in turn, each but the last up to ``quota``
    rows, the last taking the rest, so that each holds a contiguous block (FAISS labels a
    shard's results by the rows of the shards before it)."""
    if not len(rows):
        return
    if layout.mode != "shard":
        index.add(rows)
        return
    start = 0
    for i, sub in enumerate(subs):
        room = len(rows) - start if i == len(subs) - 1 else max(0, quota - sub.ntotal)
        take = rows[start : start + room]
        if len(take):
            sub.add(np.ascontiguousarray(take))
        start += len(take)
    index.syncWithSubIndexes()


class FaissMirror:
    """The index's live vectors on several GPUs, with the face of :class:`gpu.GpuMirror`:
    ``sync`` appends new rows, ``search`` returns scores and index positions. Rows
    tombstoned after the build are searched past (``k`` plus their count); once more than
    ``MAX_DEAD_HELD`` are held, or the index has doubled, it is rebuilt with a fresh
    layout. Shards are even at a build; rows added later go to the last one."""

    def __init__(
        self,
        dim: int,
        planner: Callable[[int], Layout] | None = None,
        make_sub: SubIndexFactory | None = None,
    ) -> None:
        self.dim = dim
        self.planner = planner or (lambda n: plan(n, dim))
        self.make_sub = make_sub or SUB_INDEX or gpu_flat
        self.lock = threading.Lock()
        self.layout = Layout("single", 1, 0, True)
        self.index: Any = None
        self.subs: list[Any] = []
        self.positions = np.empty(0, np.int64)  # index position of each mirror row
        self.covered = 0  # index positions [0, covered) are mirrored (live ones)
        self.quota = 0  # rows per shard but the last, set at each build
        self.dead_skipped = 0  # tombstones left out at the last build
        self.dead: np.ndarray = np.zeros(0, bool)

    @property
    def size(self) -> int:
        return self.covered

    def sync(self, rows: Callable[[int, int], np.ndarray], size: int, dead: np.ndarray) -> None:
        """Mirror index positions ``[self.size, size)``; rebuild when due."""
        self.dead = dead
        held_dead = int(dead.sum()) - self.dead_skipped
        if self.index is None or size > 2 * max(self.covered, 1) or held_dead > MAX_DEAD_HELD:
            self._build(rows, size, dead)
        elif size > self.covered:
            self._append(rows, self.covered, size, dead)

    def _build(self, rows: Callable[[int, int], np.ndarray], size: int, dead: np.ndarray) -> None:
        self.layout = self.planner(size)
        self.index, self.subs = assemble(self.layout, self.dim, self.make_sub)
        self.positions = np.empty(0, np.int64)
        self.covered = self.dead_skipped = 0
        self.quota = math.ceil(int((~dead[:size]).sum()) / self.layout.gpus)
        self._append(rows, 0, size, dead)

    def _append(
        self, rows: Callable[[int, int], np.ndarray], start: int, stop: int, dead: np.ndarray
    ) -> None:
        for lo in range(start, stop, 1 << 18):  # bounded host memory per block
            hi = min(stop, lo + (1 << 18))
            live = np.flatnonzero(~dead[lo:hi])
            self._guard(fill, self.layout, self.index, self.subs, rows(lo, hi)[live], self.quota)
            self.positions = np.concatenate([self.positions, lo + live])
            self.dead_skipped += hi - lo - len(live)
        self.covered = stop

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` live positions by inner product: scores and positions (-inf and -1
        past the live vectors), as :meth:`gpu.GpuMirror.search` gives them."""
        held_dead = int(self.dead.sum()) - self.dead_skipped
        want = min(k + max(held_dead, 0), len(self.positions))
        if want > GPU_MAX_K:
            raise BeyondGpuError(f"k={want} is past FAISS's GPU limit of {GPU_MAX_K}")
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_p = np.full((len(queries), k), -1, np.int64)
        if want == 0:
            return out_s, out_p
        queries = np.ascontiguousarray(queries, np.float32)
        scores, labels = self._guard(self.index.search, queries, want)
        pos = np.where(labels >= 0, self.positions[np.maximum(labels, 0)], -1)
        scores = np.where((pos < 0) | self.dead[np.maximum(pos, 0)], -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        kept = min(k, want)
        out_s[:, :kept] = np.take_along_axis(scores, order, 1)
        out_p[:, :kept] = np.take_along_axis(pos, order, 1)
        out_p[~np.isfinite(out_s)] = -1
        return out_s, out_p

    @staticmethod
    def _guard(fn: Callable[..., Any], *args: Any) -> Any:
        """Call FAISS, turning its out-of-memory RuntimeError into GpuMemoryError."""
        try:
            return fn(*args)
        except RuntimeError as e:
            text = str(e).lower()
            if "out of memory" in text or "cudamalloc" in text or "alloc fail" in text:
                raise GpuMemoryError(str(e)) from e
            raise
