"""Exact search over a field's float32 vectors (blocks of consecutive positions, with
tombstones): FAISS's blocked GEMM and heaps for batches, numpy's matrix product for single
queries and for a filter's rows; equal scores ordered by vid on every path."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np

from mmstore.index.backend import faiss
from mmstore.index.topk import SearchResult, in_blocks, pad, top_k


def batched(queries: int, dim: int) -> bool:
    """Whether FAISS scans this many queries with its blocked GEMM and heaps (it does from
    ``distance_compute_blas_threshold`` query floats on, 128,000 by default: 334 queries of
    384-d; below that its scan is sequential, slower than numpy's). 1,000 x 100,000 x 384:
    0.33 s by FAISS, 1.4 s by numpy on one core."""
    return queries * dim >= faiss.cvar.distance_compute_blas_threshold


#: candidates FAISS returns beyond ``k``, to break ties by vid and to skip tombstones
SCAN_SLACK = 16
DEAD_SLACK = 64


def scan(
    queries: np.ndarray, blocks: list[np.ndarray], dead: np.ndarray, vids: np.ndarray, k: int
) -> tuple[SearchResult, np.ndarray]:
    """The exact top ``k`` live vectors of ``blocks`` (consecutive positions from 0) by
    FAISS, equal scores by vid, and the queries FAISS's candidates cannot answer for sure:
    where a block's last candidate scores at or above the k-th (a tie, or tombstones, may
    reach past them). Those must be scanned again another way."""
    want = k + SCAN_SLACK + min(int(dead.sum()), DEAD_SLACK)
    scores, found, lasts, offset = [], [], [], 0
    for block in (b for b in blocks if len(b)):
        kk = min(want, len(block))
        s, i = faiss.knn(queries, block, kk, faiss.METRIC_INNER_PRODUCT)
        scores.append(s)
        found.append(i + offset)
        if kk < len(block):
            lasts.append(s[:, -1])
        offset += len(block)
    pos = np.concatenate(found, 1)
    gone = dead[pos]
    s = np.where(gone, -np.inf, np.concatenate(scores, 1)).astype(np.float32)
    v = np.where(gone, -1, vids[pos])
    order = np.lexsort((v, -s), axis=1)[:, :k]
    out = pad(SearchResult(np.take_along_axis(s, order, 1), np.take_along_axis(v, order, 1)), k)
    unsure = np.zeros(len(queries), bool)
    for last in lasts:
        unsure |= last >= out.scores[:, -1]
    return out, unsure


def search(
    queries: np.ndarray,
    k: int,
    blocks: list[np.ndarray],
    dead: np.ndarray,
    vids: np.ndarray,
    positions: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> SearchResult:
    """The top ``k`` of every live vector of ``blocks``, or of ``positions`` only (whose
    vectors are ``rows``)."""
    if positions is not None or not batched(*queries.shape):
        return numpy_scan(queries, k, blocks, dead, vids, positions, rows)
    out, unsure = scan(queries, blocks, dead, vids, k)
    return rescan(out, unsure, queries, k, blocks, dead, vids)


def rescan(
    out: SearchResult,
    which: np.ndarray,
    queries: np.ndarray,
    k: int,
    blocks: list[np.ndarray],
    dead: np.ndarray,
    vids: np.ndarray,
) -> SearchResult:
    """``out`` with the queries ``which`` answered by numpy's scan instead."""
    if which.any():
        again = numpy_scan(queries[which], k, blocks, dead, vids)
        out.scores[which], out.vids[which] = again.scores, again.vids
    return out


def numpy_scan(
    queries: np.ndarray,
    k: int,
    blocks: list[np.ndarray],
    dead: np.ndarray,
    vids: np.ndarray,
    positions: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> SearchResult:
    """:func:`search` by numpy, in blocks of queries run in threads."""
    one = partial(_numpy_block, k=k, blocks=blocks, dead=dead, vids=vids, positions=positions)
    return in_blocks(partial(one, rows=rows), queries)


def _numpy_block(
    queries: np.ndarray,
    k: int,
    blocks: list[np.ndarray],
    dead: np.ndarray,
    vids: np.ndarray,
    positions: np.ndarray | None,
    rows: np.ndarray | None,
) -> SearchResult:
    if positions is None:
        scores = np.concatenate([products(queries, b) for b in blocks], 1)
        scores[:, dead] = -np.inf
        return top_k(scores, np.arange(len(dead)), vids, k)
    assert rows is not None  # a filter's rows, gathered by the caller
    return top_k(products(queries, rows), positions, vids, k)


class _Scans:
    """How many single-query scans run now, in all the threads of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    @contextmanager
    def one(self) -> Iterator[bool]:
        """A scan's span; yields whether it began alone."""
        with self._lock:
            self.running += 1
            alone = self.running == 1
        try:
            yield alone
        finally:
            with self._lock:
                self.running -= 1


SCANS = _Scans()


def products(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``queries @ rows.T``. One query scanned while another scan runs takes numpy's own
    loop (einsum, in this thread) instead of BLAS: OpenBLAS's threads serve the whole
    process, and callers in several threads wait on each other (130,000 x 384 on 2 cores,
    scans a second: 4 threads 56 by BLAS, 132 by einsum; one thread 158 by BLAS, 62 by
    einsum)."""
    if len(queries) != 1:
        return queries @ rows.T
    with SCANS.one() as alone:
        return queries @ rows.T if alone else np.einsum("kj,ij->ik", rows, queries)
