"""The layout of an index over several GPUs (chosen by size), and the replicated or sharded
FAISS index assembled for it: run here with CPU sub-indexes (FAISS's IndexReplicas and
IndexShards accept any index), on real GPUs when a host has two or more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mmstore
from mmstore.config import IndexOptions
from mmstore.errors import GpuMemoryError
from mmstore.index import file as indexfile
from mmstore.index import gpu, multigpu
from mmstore.index.backend import faiss
from mmstore.index.multigpu import Layout, choose_layout
from mmstore.index.vectors import SearchResult, VectorIndex

GIB = 1 << 30


def integer_data(n: int, dim: int, seed: int) -> np.ndarray:
    """Small-integer vectors, some duplicated: inner products are exact in float32 in any
    summation order, so ties are real ties on every path."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 4, (n, dim)).astype(np.float32)
    data[n // 2 : n // 2 + n // 10] = data[: n // 10]  # duplicates under other vids
    return data


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A host with three 'GPUs' whose sub-indexes are CPU flat indexes."""
    monkeypatch.setattr(gpu, "cuda_available", lambda: True)
    monkeypatch.setattr(multigpu, "gpu_count", lambda: 3)
    monkeypatch.setattr(multigpu, "free_memory", lambda n: GIB)
    monkeypatch.setattr(multigpu, "SUB_INDEX", multigpu.cpu_flat)
    return monkeypatch


def assert_exact(got: SearchResult, index: VectorIndex, queries: np.ndarray) -> None:
    """``got`` is the exact answer: the CPU scan's scores, and its vids wherever the score
    is above the k-th (at the k-th score, any of the tied vids: the CPU scan's partition
    picks among them arbitrarily, the GPU paths by smallest vid)."""
    exact = index._exact(queries, got.vids.shape[1], None)
    assert (got.scores == exact.scores).all()
    above = got.scores > got.scores[:, -1:]
    assert (got.vids[above] == exact.vids[above]).all()
    pos = np.flatnonzero(~index.dead)
    vectors, vids = index.vectors_at(pos), index.vids[pos]
    for q, gs, gv in zip(queries, got.scores, got.vids, strict=True):
        tied = set(vids[vectors @ q == gs[-1]].tolist())
        assert set(gv[gs == gs[-1]].tolist()) <= tied


# -- the layout -------------------------------------------------------------------------------
def test_one_gpu_is_single_whatever_the_size() -> None:
    assert choose_layout(1000, 384, GIB, 1) == Layout("single", 1, 1000 * 384 * 4, True)
    assert choose_layout(10**9, 384, GIB, 1).fits is False


def test_several_gpus_replicate_when_one_holds_the_vectors() -> None:
    layout = choose_layout(1_000_000, 384, 16 * GIB, 4)
    assert (layout.mode, layout.gpus, layout.fits) == ("replicate", 4, True)
    assert layout.bytes_per_gpu == 1_000_000 * 384 * 4


def test_replicate_up_to_the_headroom_boundary_then_shard() -> None:
    memory = 1_000_000
    at_limit = int(memory * multigpu.HEADROOM) // (4 * 10)  # vectors of dim 10 that fit
    assert choose_layout(at_limit, 10, memory, 2).mode == "replicate"
    over = choose_layout(at_limit + 1, 10, memory, 2)
    assert over.mode == "shard" and over.fits
    assert over.bytes_per_gpu == -(-(at_limit + 1) * 40 // 2)


def test_shard_reports_when_even_shards_do_not_fit() -> None:
    layout = choose_layout(1_000_000_000, 768, 80 * GIB, 8)
    assert layout.mode == "shard" and not layout.fits
    assert choose_layout(100_000_000, 768, 80 * GIB, 8).fits


def test_empty_index_replicates() -> None:
    assert choose_layout(0, 384, GIB, 2).as_dict() == {
        "mode": "replicate",
        "gpus": 2,
        "bytes_per_gpu": 0,
        "fits": True,
    }


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((1000, 384, GIB, 0), "n_gpus"),
        ((1000, 384, GIB, -2), "n_gpus"),
        ((-1, 384, GIB, 2), "n_vectors"),
        ((1000, 0, GIB, 2), "dim"),
        ((1000, 384, 0, 2), "gpu_memory"),
        ((1000, 384, -GIB, 2), "gpu_memory"),
        ((1000.5, 384, GIB, 2), "n_vectors"),
        ((1000, 384, GIB, True), "n_gpus"),
        (("1000", 384, GIB, 2), "n_vectors"),
    ],
)
def test_bad_layout_inputs_are_typed_errors(args: tuple, name: str) -> None:
    with pytest.raises(mmstore.InvalidInputError, match=name):
        choose_layout(*args)


def test_bad_headroom_is_a_typed_error() -> None:
    with pytest.raises(ValueError, match="headroom"):
        choose_layout(10, 4, GIB, 2, headroom=0.0)


# -- the assembly, with CPU sub-indexes -------------------------------------------------------
@pytest.mark.parametrize("mode", ["replicate", "shard"])
@pytest.mark.parametrize("gpus", [2, 3])
def test_assembled_index_equals_one_flat_index(mode: str, gpus: int) -> None:
    data = integer_data(4000, 16, seed=1)
    queries = integer_data(50, 16, seed=2)
    layout = Layout(mode, gpus, 0, True)  # type: ignore[arg-type]
    index, subs = multigpu.assemble(layout, 16, multigpu.cpu_flat)
    quota = -(-4000 // gpus)
    for start in range(0, 4000, 1500):  # appended in pieces, as a mirror builds
        multigpu.fill(layout, index, subs, data[start : start + 1500], quota)
    flat = faiss.IndexFlatIP(16)
    flat.add(data)
    got_s, got_l = index.search(queries, 20)
    want_s, want_l = flat.search(queries, 20)
    assert index.ntotal == 4000 and sum(s.ntotal for s in subs) == 4000 * (
        gpus if mode == "replicate" else 1
    )
    assert (got_s == want_s).all()  # scores identical; labels may differ only within ties
    for gs, gl, wl in zip(got_s, got_l, want_l, strict=True):
        for score in np.unique(gs[gs > gs[-1]]):  # ties cut by k may hold others
            assert set(gl[gs == score]) == set(wl[gs == score])
        assert (data[gl] @ data[gl].T).shape == (20, 20)


def test_shards_split_rows_evenly_in_contiguous_blocks() -> None:
    layout = Layout("shard", 3, 0, True)
    index, subs = multigpu.assemble(layout, 4, multigpu.cpu_flat)
    data = np.eye(4, dtype=np.float32)[np.arange(30) % 4] * np.arange(1, 31)[:, None]
    multigpu.fill(layout, index, subs, data[:25], quota=10)
    multigpu.fill(layout, index, subs, data[25:], quota=10)  # later rows: the last shard
    assert [s.ntotal for s in subs] == [10, 10, 10]
    _, labels = index.search(data[[0, 15, 29]], 1)
    assert labels[:, 0].tolist() == [28, 27, 29]  # the largest multiple on each axis


# -- the index's GPU path over several GPUs ---------------------------------------------------
@pytest.mark.parametrize("memory", [GIB, 100_000], ids=["replicate", "shard"])
def test_multi_gpu_search_matches_exact_with_ties(
    fake_gpus: pytest.MonkeyPatch, memory: int
) -> None:
    fake_gpus.setattr(multigpu, "free_memory", lambda n: memory)
    fake_gpus.setattr(multigpu, "MAX_DEAD_HELD", 300)
    data = integer_data(3000, 16, seed=3)
    queries = integer_data(30, 16, seed=4)
    on_gpu = VectorIndex(16, IndexOptions(ann_threshold=1000, device="cuda"))
    on_cpu = VectorIndex(16, IndexOptions(ann_threshold=1000, device="cpu"))
    steps = [
        lambda ix: ix.add(np.arange(1, 1501), data[:1500]),
        lambda ix: ix.remove(np.arange(1, 1501, 7)),  # held and searched past
        lambda ix: ix.add(np.arange(2001, 3501), data[1500:]),  # appended (size doubles: rebuilt)
        lambda ix: ix.remove(np.arange(2, 1501, 3)),  # past MAX_DEAD_HELD: rebuilt without them
        lambda ix: ix.optimize(),
    ]
    for step in steps:
        step(on_gpu)
        step(on_cpu)
        got = on_gpu.search(queries, 10)
        assert isinstance(on_gpu._gpu, multigpu.FaissMirror)
        assert on_gpu._gpu.layout.mode == ("replicate" if memory == GIB else "shard")
        assert_exact(got, on_cpu, queries)


def test_a_large_build_shards_evenly(fake_gpus: pytest.MonkeyPatch) -> None:
    fake_gpus.setattr(multigpu, "free_memory", lambda n: 1000)
    data = np.random.default_rng(0).standard_normal((600_000, 2)).astype(np.float32)
    index = VectorIndex(2, IndexOptions(device="cuda"))
    index.add(np.arange(1, 600_001), data)
    index.remove(np.arange(1, 600_001, 2))
    index.search(data[:1], 1)
    assert [s.ntotal for s in index._gpu.subs] == [100_000] * 3  # built in several blocks
    index.add(np.arange(600_001, 600_011), data[:10])
    index.search(data[:1], 1)
    assert [s.ntotal for s in index._gpu.subs] == [100_000, 100_000, 100_010]


def test_k_past_the_gpu_limit_is_answered_on_the_cpu(fake_gpus: pytest.MonkeyPatch) -> None:
    fake_gpus.setattr(multigpu, "GPU_MAX_K", 32)
    data = integer_data(500, 8, seed=5)
    index = VectorIndex(8, IndexOptions(device="cuda"))
    index.add(np.arange(1, 501), data)
    assert_exact(index.search(data[:3], 40), index, data[:3])
    assert index.options.device == "cuda"  # only that search left the GPU


def test_faiss_out_of_memory_moves_the_index_to_the_cpu(fake_gpus: pytest.MonkeyPatch) -> None:
    def no_memory(*args: object) -> None:
        raise RuntimeError("Error in void* faiss::gpu::allocMemorySpace: cudaMalloc out of memory")

    fake_gpus.setattr(multigpu, "fill", no_memory)
    data = integer_data(200, 8, seed=6)
    index = VectorIndex(8, IndexOptions(device="cuda"))
    index.add(np.arange(1, 201), data)
    got = index.search(data[:2], 5)
    assert index.options.device == "cpu" and index._gpu is None
    assert_exact(got, index, data[:2])


def test_other_faiss_errors_are_not_taken_for_out_of_memory() -> None:
    def broken() -> None:
        raise RuntimeError("Error: 'd == dim' failed")

    with pytest.raises(RuntimeError, match="d == dim") as caught:
        multigpu.FaissMirror._guard(broken)
    assert not isinstance(caught.value, GpuMemoryError)


# -- the layout where users see it ------------------------------------------------------------
def test_layout_is_in_info_and_in_the_index_file(
    fake_gpus: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": 8}}
    data = integer_data(100, 8, seed=7)
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("v", encoders=spec)
        col.ingest([{"id": str(i), "e": v.tolist()} for i, v in enumerate(data)])
        planned = col.info()["fields"][0]["index"]["gpu_layout"]
        assert planned == {
            "mode": "replicate",
            "gpus": 3,
            "bytes_per_gpu": 3200,
            "fits": True,
            "active": False,
        }
        col.search(vector=data[0], k=3)
        assert col.info()["fields"][0]["index"]["gpu_layout"]["active"] is True
        col.optimize()  # saves the index file and its manifest row
    (path,) = (tmp_path / "s").rglob("*.mmi")
    head = indexfile.header(path.read_bytes())
    assert head["gpu_layout"]["mode"] == "replicate" and head["gpu_layout"]["gpus"] == 3


def test_no_gpu_layout_on_a_cpu_host() -> None:
    if gpu.cuda_available():
        pytest.skip("a GPU is visible")
    index = VectorIndex(4)
    index.add(np.arange(1, 3), np.eye(2, 4, dtype=np.float32))
    assert index.params()["gpu_layout"] is None


# -- real GPUs --------------------------------------------------------------------------------
@pytest.mark.skipif(
    multigpu.gpu_count() < 2, reason="needs 2 or more GPUs visible to FAISS (get_num_gpus() < 2)"
)
@pytest.mark.parametrize("mode", ["replicate", "shard"])
def test_real_gpus_match_the_cpu(mode: str) -> None:
    n = multigpu.gpu_count()
    mirror = multigpu.FaissMirror(16, planner=lambda size: Layout(mode, n, 0, True))  # type: ignore[arg-type]
    data = integer_data(20_000, 16, seed=8)
    index = VectorIndex(16, IndexOptions(device="cpu"))
    index.add(np.arange(1, 20_001), data)
    index.remove(np.arange(1, 20_001, 5))
    mirror.sync(index._rows, index.size, index.dead)
    scores, pos = mirror.search(data[:20], 26)
    exact = index._exact(data[:20], 26, None)
    assert (scores[:, 0] == exact.scores[:, 0]).all()
    assert (index.vids[pos[:, 0]] != 0).all() and not index.dead[pos].any()
