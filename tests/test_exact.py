"""Exact search (mmstore.index.exact): FAISS's batch scan gives the answers numpy's scan
gives, ties broken by the smallest vid and tombstones skipped, over one block or several;
the queries its candidates cannot settle are rescanned, and only those."""

from __future__ import annotations

import numpy as np
import pytest

from mmstore.index import exact
from tests.test_index import assert_exact_top, normed

pytestmark = pytest.mark.kernels

DIM = 24
#: queries enough for FAISS's blocked scan at this dimension (128,000 floats by default)
BATCH = 128_000 // DIM + 1


def both(
    queries: np.ndarray, k: int, blocks: list[np.ndarray], dead: np.ndarray, vids: np.ndarray
) -> tuple[exact.SearchResult, exact.SearchResult]:
    assert exact.batched(*queries.shape)  # the FAISS path
    return exact.search(queries, k, blocks, dead, vids), exact.numpy_scan(
        queries, k, blocks, dead, vids
    )


@pytest.mark.parametrize("n_dead", [0, 10, 500])  # none, within DEAD_SLACK, far past it
@pytest.mark.parametrize("split", [None, 700])  # one block, or two
def test_batch_scan_equals_numpy_scan(n_dead: int, split: int | None) -> None:
    x = normed(2_000, DIM)
    vids = np.arange(5, 5 + 3 * 2_000, 3)
    dead = np.zeros(2_000, bool)
    dead[np.random.default_rng(1).choice(2_000, n_dead, replace=False)] = True
    blocks = [x] if split is None else [x[:split], x[split:]]
    q = normed(BATCH, DIM, seed=2)
    got, want = both(q, 10, blocks, dead, vids)
    assert_exact_top(got.vids, x, vids, q, 10, ~dead)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert not np.isin(got.vids, vids[dead]).any()


def test_ties_past_the_candidates_go_to_the_smallest_vids() -> None:
    """60 copies of one vector (more than k plus the slack), in two blocks and out of vid
    order: every query's top 10 among them are the 10 smallest vids."""
    x = normed(500, DIM, seed=3)
    x[100:160] = x[100]
    vids = np.random.default_rng(4).permutation(np.arange(1, 501)) * 2
    q = np.repeat(x[100:101], BATCH, 0)
    for blocks in ([x], [x[:130], x[130:]]):
        got, want = both(q, 10, blocks, np.zeros(500, bool), vids)
        expected = np.sort(vids[100:160])[:10]
        assert (got.vids == expected).all()
        np.testing.assert_array_equal(got.vids, want.vids)


def test_fewer_live_vectors_than_k_are_padded() -> None:
    x = normed(300, DIM, seed=5)
    dead = np.ones(300, bool)
    dead[[7, 70, 170]] = False  # three live vectors
    got, _ = both(normed(BATCH, DIM, seed=6), 5, [x], dead, np.arange(300))
    assert (np.sort(got.vids[:, :3], 1) == [7, 70, 170]).all()
    assert (got.vids[:, 3:] == -1).all() and np.isneginf(got.scores[:, 3:]).all()


def test_only_unsure_queries_are_rescanned(monkeypatch: pytest.MonkeyPatch) -> None:
    x = normed(5_000, DIM, seed=7)
    q = normed(BATCH, DIM, seed=8)
    rescanned: list[int] = []
    real = exact.numpy_scan
    monkeypatch.setattr(
        exact, "numpy_scan", lambda qs, *a, **kw: rescanned.append(len(qs)) or real(qs, *a, **kw)
    )
    out = exact.search(q, 10, [x], np.zeros(5_000, bool), np.arange(5_000))
    assert sum(rescanned) < 5  # distinct random scores: ties are rare
    assert_exact_top(out.vids, x, np.arange(5_000), q, 10)


def test_a_single_query_beside_another_scan_takes_numpy_s_loop_and_agrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One query scanned while another scan runs (OpenBLAS's shared threads would make the
    callers wait on each other) is scored by einsum in its own thread, to the BLAS scores
    within float32 rounding, and ranks the same vectors first."""
    x, q = normed(3000, DIM, seed=11), normed(1, DIM, seed=12)
    alone = exact.products(q, x)
    used: list[str] = []
    einsum = np.einsum
    monkeypatch.setattr(np, "einsum", lambda *a, **kw: used.append(a[0]) or einsum(*a, **kw))
    assert exact.products(q, x) is not None and used == []  # alone: BLAS
    with exact.SCANS.one():  # another scan in flight
        beside = exact.products(q, x)
        found = exact.numpy_scan(q, 10, [x], np.zeros(len(x), bool), np.arange(len(x)))
    assert used == ["kj,ij->ik"] * 2
    assert np.allclose(alone, beside, rtol=1e-5, atol=1e-6)
    assert found.vids[0].tolist() == np.argsort(-alone[0], kind="stable")[:10].tolist()
    assert exact.SCANS.running == 0
