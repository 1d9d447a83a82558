"""The vector index: exact while small, HNSW with a tuned search width once large,
tombstones never returned, and a byte-exact round trip through its file format."""

from __future__ import annotations

import numpy as np
import pytest

import mmstore
from mmstore.config import IndexOptions
from mmstore.index import file as indexfile
from mmstore.index.vectors import VectorIndex

pytestmark = pytest.mark.kernels  # also run on portable CPU kernels (Makefile)


def normed(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(
    x: np.ndarray, vids: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray | None = None
) -> list[list[int]]:
    scores = q @ x.T
    if keep is not None:
        scores[:, ~keep] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[int(vids[i]) for i in row if np.isfinite(scores[r, i])] for r, row in enumerate(order)]


TOL = 1e-5  # two code paths (numpy gemv or gemm, torch, FAISS) differ by about 1e-7 here


def assert_exact_top(
    got: np.ndarray,
    x: np.ndarray,
    vids: np.ndarray,
    q: np.ndarray,
    k: int,
    keep: np.ndarray | None = None,
) -> None:
    """`got` is a true top-k of each query: every id scoring above the k-th score by more
    than TOL is in it, none below it by more than TOL, and they come best first. Ids whose
    scores differ by less than TOL may swap places, since the order of ids that close is
    rounding, not a promise (exact ties, which are, are checked where the data has them)."""
    scores = q @ x.T
    if keep is not None:
        scores[:, ~keep] = -np.inf
    where = {int(v): i for i, v in enumerate(vids)}
    for r, row in enumerate(got.tolist()):
        found = [v for v in row if v != -1]
        true = scores[r, [where[v] for v in found]]
        cut = np.sort(scores[r])[::-1][min(k, int(np.isfinite(scores[r]).sum())) - 1]
        assert np.isfinite(true).all() and (true >= cut - TOL).all(), (r, found)
        assert (np.diff(true) <= TOL).all(), (r, found, true)
        assert set(vids[scores[r] > cut + TOL].tolist()) <= set(found), (r, found)
        assert len(found) == min(k, int(np.isfinite(scores[r]).sum()))


@pytest.fixture
def small() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    x = normed(500, 24)
    vids = np.arange(10, 10 + 2 * 500, 2)
    index = VectorIndex(24)
    index.add(vids[:300], x[:300])
    index.add(vids[300:], x[300:])
    return index, x, vids


def test_exact_search_equals_brute_force(small: tuple) -> None:
    index, x, vids = small
    q = normed(20, 24, seed=1)
    assert_exact_top(index.search(q, 10).vids, x, vids, q, 10)
    assert index.kind == "flat"


def test_tombstones_are_never_returned(small: tuple) -> None:
    index, x, vids = small
    gone = vids[::3]
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0
    q = normed(20, 24, seed=2)
    keep = ~np.isin(vids, gone)
    assert_exact_top(index.search(q, 10).vids, x, vids, q, 10, keep)
    assert index.live == 500 - len(gone)


def test_allowed_subset_is_exact(small: tuple) -> None:
    index, x, vids = small
    allowed = vids[vids % 7 == 0]
    q = normed(5, 24, seed=3)
    keep = np.isin(vids, allowed)
    assert_exact_top(index.search(q, 10, allowed).vids, x, vids, q, 10, keep)


def test_fewer_vectors_than_k_pads_with_minus_one() -> None:
    index = VectorIndex(4)
    index.add(np.array([1, 2]), normed(2, 4))
    result = index.search(normed(1, 4), 5)
    assert sorted(result.vids[0, :2].tolist()) == [1, 2]
    assert result.vids[0, 2:].tolist() == [-1, -1, -1]


def test_vids_must_increase() -> None:
    index = VectorIndex(4)
    index.add(np.array([5]), normed(1, 4))
    with pytest.raises(ValueError, match="increasing"):
        index.add(np.array([5]), normed(1, 4))


def test_hnsw_is_built_past_the_threshold_and_tuned_to_the_recall_target() -> None:
    x = normed(3000, 32, seed=4)
    vids = np.arange(1, 3001)
    index = VectorIndex(32, IndexOptions(ann_threshold=1000, target_recall=0.95))
    index.add(vids, x)
    assert index.kind == "flat" and index.needs_optimize()
    index.optimize()
    assert index.kind == "hnsw" and index.n_base == 3000
    assert index.tuned_recall is not None and index.tuned_recall >= 0.95
    q = normed(200, 32, seed=5)
    got = index.search(q, 10).vids
    truth = brute(x, vids, q, 10)
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got.tolist(), truth, strict=True)])
    assert recall >= 0.93  # tuned on held-out vectors, so fresh queries reach it too
    assert index.params()["efSearch"] == index.ef_search


def test_data_without_neighbourhoods_stays_exact_without_a_graph_built() -> None:
    """8,000 random 384-d vectors against a target of 0.99: the sample decides, before any
    full index is built, that no approximate index reaches it (issue 18: a graph was built,
    then thrown away); searches are exact, and a reloaded file keeps the decision."""
    x = normed(8000, 384, seed=6)
    vids = np.arange(1, 8001)
    options = IndexOptions(
        ann_threshold=1000, hnsw_m=8, hnsw_ef_construction=40, target_recall=0.99
    )
    index = VectorIndex(384, options)
    index.add(vids, x)
    index.optimize()
    assert index.kind == "flat" and index.ann is None
    assert index.decision is not None and index.decision.kind == "flat"
    assert index.decision.sample_recall is not None and index.decision.sample_recall < 0.99
    assert "exact search" in index.params()["decision"]["reason"]
    assert not index.needs_optimize()  # decided: not tried again until the field grows 4x
    q = normed(50, 384, seed=7)
    assert_exact_top(index.search(q, 10).vids, x, vids, q, 10)
    again = indexfile.load(b"".join(bytes(c) for c in indexfile.dump(index)), options)
    assert again.decision == index.decision and not again.needs_optimize()


def test_a_graph_asked_for_that_misses_the_target_is_not_served() -> None:
    """The same data with ``kind='hnsw'`` asked for: the graph is built (no sample decides
    it), its tuning misses 0.99, so searches scan exactly (recall 1.0, filtered too), and a
    reloaded file decides the same.

    The widest width reaches 0.945 on this data (AVX2, 1 and 2 threads): against a target of
    0.99 that misses by about 90 of the 2,000 held-out query-neighbour pairs, so a graph
    built by other SIMD kernels or another FAISS release still misses it."""
    x = normed(8000, 384, seed=6)
    vids = np.arange(1, 8001)
    options = IndexOptions(
        ann_threshold=1000, hnsw_m=8, hnsw_ef_construction=40, target_recall=0.99, kind="hnsw"
    )
    index = VectorIndex(384, options)
    index.add(vids, x)
    index.optimize()
    assert index.kind == "hnsw" and index.tuned_recall is not None
    assert index.tuned_recall < options.target_recall and not index.serves_graph
    assert index.params()["search"].startswith("exact")
    q = normed(50, 384, seed=7)
    assert_exact_top(index.search(q, 10).vids, x, vids, q, 10)
    assert_exact_top(index.search(q, 10, allowed=vids[::3]).vids, x[::3], vids[::3], q, 10)
    graph = index.hnsw.search(q, 10)[1]  # what the graph alone would have answered
    assert any(set(vids[g]) != set(t) for g, t in zip(graph, brute(x, vids, q, 10), strict=True))
    again = indexfile.load(b"".join(bytes(c) for c in indexfile.dump(index)), options)
    assert not again.serves_graph
    assert_exact_top(again.search(q, 10).vids, x, vids, q, 10)
    tuned = VectorIndex(384, IndexOptions(ann_threshold=1000))
    tuned.add(np.arange(1, 3001), normed(3000, 32, seed=4) @ np.eye(32, 384, dtype=np.float32))
    tuned.optimize()
    assert tuned.serves_graph and tuned.params()["search"] == "graph"


def test_hnsw_with_a_tail_tombstones_and_filters() -> None:
    x = normed(2500, 16, seed=6)
    vids = np.arange(1, 2501)
    index = VectorIndex(16, IndexOptions(ann_threshold=1000))
    index.add(vids[:2000], x[:2000])
    index.optimize()
    index.add(vids[2000:], x[2000:])  # the tail, searched exactly
    index.remove(vids[:50])
    q = x[2100:2110]  # queries equal to tail vectors find themselves
    assert index.search(q, 1).vids[:, 0].tolist() == vids[2100:2110].tolist()
    q = x[:10]  # deleted vectors are not found, even by themselves
    assert not set(index.search(q, 10).vids.ravel().tolist()) & set(vids[:50].tolist())
    allowed = vids[vids % 50 == 0]  # selective filter: exact
    keep = np.isin(vids, allowed) & ~np.isin(vids, vids[:50])
    assert_exact_top(index.search(q, 5, allowed).vids, x, vids, q, 5, keep)


def test_an_unfiltered_search_scans_the_tail_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tail beside a graph is scanned where it lies: gathering its rows into a copy on
    every search (a regression of 4a8c064) cost 100 ms a search with a 100,000-row tail."""
    x = normed(2500, 16, seed=7)
    vids = np.arange(1, 2501)
    index = VectorIndex(16, IndexOptions(ann_threshold=1000))
    index.add(vids[:2000], x[:2000])
    index.optimize()
    index.add(vids[2000:], x[2000:])
    index.remove(vids[2000:2005])  # tombstones in the tail too
    gathered: list[int] = []
    gather = index.vectors_at
    monkeypatch.setattr(index, "vectors_at", lambda p: gathered.append(len(p)) or gather(p))
    q = x[2000:2020]
    found = index.search(q, 1).vids[:, 0].tolist()
    assert gathered == []
    assert found[5:] == vids[2005:2020].tolist() and not set(found[:5]) & set(vids[2000:2005])


def test_broad_filter_on_hnsw_returns_k_allowed_hits() -> None:
    x = normed(30_000, 8, seed=7)
    vids = np.arange(1, 30_001)
    index = VectorIndex(8, IndexOptions(ann_threshold=1000, hnsw_ef_construction=40))
    index.add(vids, x)
    index.optimize()
    allowed = vids[vids % 10 != 0][:25_000]  # too many for an exact scan
    result = index.search(normed(10, 8, seed=8), 10, allowed)
    assert (result.vids >= 0).all()
    assert np.isin(result.vids, allowed).all()


@pytest.mark.parametrize("ann", [False, True])
def test_file_round_trip_gives_identical_results(ann: bool) -> None:
    x = normed(1500, 16, seed=9)
    vids = np.arange(1, 1501) * 3
    index = VectorIndex(16, IndexOptions(ann_threshold=1000))
    index.add(vids[:1200], x[:1200])
    if ann:
        index.optimize()
    index.add(vids[1200:], x[1200:])
    index.remove(vids[5:9])
    again = indexfile.load(b"".join(bytes(c) for c in indexfile.dump(index)))
    q = normed(30, 16, seed=10)
    a, b = index.search(q, 10), again.search(q, 10)
    assert np.array_equal(a.vids, b.vids) and np.array_equal(a.scores, b.scores)
    assert (again.kind, again.ef_search, again.live) == (index.kind, index.ef_search, index.live)


def test_compaction_drops_tombstones() -> None:
    index = VectorIndex(4)
    index.add(np.arange(1, 11), normed(10, 4))
    index.remove(np.arange(1, 6))
    assert index.needs_optimize()
    index.optimize()
    assert index.size == 5 and index.live == 5 and index.vids.tolist() == [6, 7, 8, 9, 10]


def test_gpu_mirror_path_matches_exact_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU search path (mirror kept in step through adds, deletes, HNSW builds and
    compaction) gives the exact results; run here on CPU tensors, on a GPU by
    benchmarks/check_gpu.py."""
    from mmstore.config import IndexOptions
    from mmstore.index import gpu

    monkeypatch.setattr(gpu, "cuda_available", lambda: True)
    monkeypatch.setattr(gpu, "MIRROR_DEVICE", "cpu")
    rng = np.random.default_rng(5)
    data = rng.standard_normal((3000, 24)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    on_gpu = VectorIndex(24, IndexOptions(ann_threshold=1000, device="cuda"))
    on_cpu = VectorIndex(24, IndexOptions(ann_threshold=1000, device="cpu"))
    queries = data[:20] + 0.05
    steps = [
        lambda ix: ix.add(np.arange(1, 1501), data[:1500]),
        lambda ix: ix.remove(np.arange(1, 1501, 3)),
        lambda ix: ix.add(np.arange(2001, 3501), data[1500:]),
        lambda ix: ix.optimize(),  # builds HNSW over a reordered tail
        lambda ix: ix.remove(np.arange(2001, 3501, 2)),
        lambda ix: ix.optimize(),  # compacts
    ]
    for step in steps:
        step(on_gpu)
        step(on_cpu)
        got = on_gpu.search(queries, 10)
        assert on_gpu._gpu is not None and on_gpu._gpu.size == on_gpu.size
        exact = on_cpu._exact(np.ascontiguousarray(queries), 10, None)
        assert (got.vids == exact.vids).all()
        assert np.allclose(got.scores, exact.scores, atol=1e-5)


def test_cuda_index_device_without_a_gpu_is_a_clear_error() -> None:
    from mmstore.index import gpu

    if gpu.cuda_available():
        pytest.skip("a GPU is visible")
    assert gpu.resolve("auto") == "cpu"
    with pytest.raises(mmstore.ConfigError, match="no CUDA device"):
        gpu.resolve("cuda")


def test_gpu_mirror_survives_concurrent_first_searches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads racing to the first search build one mirror with each row once."""
    import threading

    from mmstore.config import IndexOptions
    from mmstore.index import gpu

    monkeypatch.setattr(gpu, "cuda_available", lambda: True)
    monkeypatch.setattr(gpu, "MIRROR_DEVICE", "cpu")
    rng = np.random.default_rng(9)
    data = rng.standard_normal((20_000, 16)).astype(np.float32)
    for trial in range(3):
        index = VectorIndex(16, IndexOptions(device="cuda"))
        index.add(np.arange(1, 20_001), data)
        barrier = threading.Barrier(4)
        results: list[np.ndarray] = []

        def search(index: VectorIndex, barrier: threading.Barrier, results: list) -> None:
            barrier.wait()
            results.append(index.search(data[:3], 5).vids)

        threads = [
            threading.Thread(target=search, args=(index, barrier, results)) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert index._gpu.size == 20_000, trial
        assert len(results) == 4 and all((r == results[0]).all() for r in results)
        assert (results[0][:, 0] == np.arange(1, 4)).all()


def test_exact_scan_breaks_ties_at_the_kth_score_by_smallest_vid() -> None:
    """More vectors tie at the k-th score than fit: the smallest vids make it, as on the
    GPU (argpartition alone picks among the tied at random)."""
    from mmstore.config import IndexOptions
    from mmstore.index.vectors import VectorIndex

    rng = np.random.default_rng(0)
    vectors = np.tile(np.array([[1, 0, 0, 0]], np.float32), (500, 1))
    vectors[::3] = 0.1 * rng.normal(size=(167, 4)).astype(np.float32)
    index = VectorIndex(4, IndexOptions())
    index.add(np.arange(1, 501), vectors)
    query = np.array([[1, 0, 0, 0]] * 3, np.float32)
    tied = [v for v in range(1, 501) if (v - 1) % 3]
    assert index.search(query, 5).vids.tolist() == [tied[:5]] * 3
    allowed = np.arange(100, 400)
    assert index.search(query[:1], 7, allowed).vids[0].tolist() == [v for v in tied if v >= 100][:7]
    index.remove(np.array(tied[:2]))
    assert index.search(query[:1], 4).vids[0].tolist() == tied[2:6]


def test_an_optimize_on_a_copy_leaves_the_serving_index_as_it_was() -> None:
    """The graph is extended on a copy (mmstore.index.fork): the original keeps its graph,
    tail, vid order and answers; the copy holds every vector in its graph and finds them."""
    from mmstore.index.fork import optimized_copy

    x = normed(3000, 16, seed=8)
    vids = np.arange(1, 3001)
    index = VectorIndex(16, IndexOptions(ann_threshold=1000))
    index.add(vids[:2000], x[:2000])
    index.optimize()
    assert optimized_copy(index) is None  # nothing in the tail to add
    index.add(vids[2000:], x[2000:])
    index.remove(vids[:5])
    before = index.search(x[1990:2100], 3)
    order = index.vids.copy()
    new = optimized_copy(index, seed=1)
    assert new is not None and new.ann is not index.ann
    assert (index.n_base, index.size, index.vids.tolist()) == (2000, 3000, order.tolist())
    after = index.search(x[1990:2100], 3)
    assert after.vids.tolist() == before.vids.tolist()
    assert (new.n_base, new.size, new.live) == (3000, 3000, 2995)
    assert new.search(x[2100:2110], 1).vids[:, 0].tolist() == vids[2100:2110].tolist()
    assert not set(new.search(x[:5], 10).vids.ravel().tolist()) & set(vids[:5].tolist())
