"""Classifier heads trained through Ray Train's TorchTrainer (two CPU workers, gloo, on a
local cluster the test starts), with the per-rank code torchrun runs; sharding by record
hash. The torchrun run is in tests/test_heads_dp.py and uses :func:`assert_like_single`.

Bad inputs tried: num_workers of 0, of -1 and not a number, an unknown input field, dp with
Ray, Ray not installed (the import monkeypatched away), and a record-hash sharding that
leaves a rank no rows."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mmstore
from mmstore.distributed.ray_train import RayUnavailableError, train_head_ray
from mmstore.errors import InvalidInputError, MMStoreError, UnknownNameError
from mmstore.heads import HeadReport
from mmstore.heads.distributed import World, shard_owners
from mmstore.heads.split import TRAIN, assign_splits

sys.path.insert(0, str(Path(__file__).parent))
from test_heads import FAST, SPEC, N, vector_records

OPTIONS: dict[str, Any] = {"inputs": ["a", "b"], "fusion": "concat", **FAST}
# Distributed and single-process training see the same rows but in another order (shards,
# per-rank batches of 16, per-rank dropout), so their weights differ; the metric must not.
# On this separable set of 240 records (46 test rows, 30 validation rows) one test row is
# 0.022 of accuracy or macro-F1: 0.03 allows one row to differ and nothing more. One
# validation row of a 10/10/10 split costs about 0.033 of macro-F1, so the best validation
# macro-F1 gets 0.04: again one row and no more.
TOLERANCE = {"accuracy": 0.03, "macro_f1": 0.03, "val_macro_f1": 0.04}


def assert_like_single(store: Path, distributed: dict[str, Any]) -> dict[str, float]:
    """Train the same head in one process on ``store`` and compare it with the distributed
    head's head.json (``distributed``): test accuracy and macro-F1, best validation
    macro-F1. Returns the figures (reported in docs/heads-distributed.md)."""
    with mmstore.open(store) as st:
        single = st.collection("items").train_head("single", **OPTIONS)
    figures = {}
    for key, one, many in (
        ("accuracy", single.metrics["accuracy"], distributed["metrics"]["accuracy"]),
        ("macro_f1", single.metrics["macro_f1"], distributed["metrics"]["macro_f1"]),
        ("val_macro_f1", _best_val(single.history), _best_val(distributed["history"])),
    ):
        assert abs(one - many) <= TOLERANCE[key], (key, one, many)
        figures[f"single_{key}"], figures[f"distributed_{key}"] = one, many
    return figures


def assert_two_gloo_ranks(meta: dict[str, Any], engine: str) -> None:
    """head.json of a head trained by ``engine`` on two CPU ranks (gloo, batch 16 a rank),
    its training rows sharded by record hash."""
    dist = meta["metrics"]["distributed"]
    assert {k: dist[k] for k in ("engine", "world_size", "backend", "rank_batch_size")} == {
        "engine": engine,
        "world_size": 2,
        "backend": "gloo",
        "rank_batch_size": 16,
    }
    assert dist["sharding"] == "record_hash"
    assert_sharded_by_hash(meta)


def assert_sharded_by_hash(meta: dict[str, Any]) -> None:
    """Every training row is owned by exactly one rank, the one its id hashes to."""
    ids = [r["id"] for r in vector_records()]
    split = assign_splits(ids, (0.7, 0.15, 0.15))
    train_ids = [i for i, s in zip(ids, split, strict=True) if s == TRAIN]
    owners = np.bincount(shard_owners(train_ids, 2), minlength=2).tolist()
    assert meta["metrics"]["distributed"]["shard_rows"] == owners
    assert sum(owners) == meta["split_rows"]["train"]


def _best_val(history: list[dict[str, Any]]) -> float:
    return max(float(h["val_macro_f1"]) for h in history)


@pytest.fixture
def closed_store(tmp_path: Path) -> Path:
    """A store with the separable vector records, closed (workers open it read-only)."""
    path = tmp_path / "store"
    with mmstore.open(path) as st:
        st.create_collection("items", encoders=SPEC).ingest(vector_records())
    return path


@pytest.fixture
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_train_two_workers_like_single(closed_store: Path, ray_cluster: Any) -> None:
    report = train_head_ray(
        closed_store, "items", "rayhead", num_workers=2, resources_per_worker={"CPU": 1}, **OPTIONS
    )
    assert isinstance(report, HeadReport) and report.name == "rayhead"
    meta = json.loads((report.path / "head.json").read_text())
    assert_two_gloo_ranks(meta, "ray")
    assert sum(meta["split_rows"].values()) == N
    assert report.metrics["accuracy"] == meta["metrics"]["accuracy"]
    figures = assert_like_single(closed_store, meta)
    print("single vs ray:", figures)
    # rank 0's head serves through the normal path
    with mmstore.open(closed_store, read_only=True) as st:
        col = st.collection("items")
        rows = {h["name"]: h for h in col.heads()}
        assert rows["rayhead"]["stale"] is False
        out = col.predict("rayhead", ["v0", "v1", "v2"])
        assert [r["label"] for r in out] == ["k0", "k1", "k2"]
    leftovers = [p.name for p in (closed_store / "heads" / "items").iterdir() if p.name[0] == "."]
    assert leftovers == []


@pytest.mark.parametrize("workers", [0, -1, "2", True])
def test_bad_num_workers_refused(closed_store: Path, workers: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"num_workers must be .* 1 or more"):
        train_head_ray(closed_store, "items", "bad", num_workers=workers, **OPTIONS)


def test_unknown_input_field_refused(closed_store: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown field 'c'.*available: a, b"):
        train_head_ray(closed_store, "items", "bad", **{**OPTIONS, "inputs": ["a", "c"]})


def test_dp_with_ray_refused(closed_store: Path) -> None:
    dp = {"epsilon": 8.0, "delta": 1e-5}
    with pytest.raises(InvalidInputError, match=r"dp with distributed .*Ray Train.* one process"):
        train_head_ray(closed_store, "items", "bad", dp=dp, **OPTIONS)


def test_ray_missing_says_how_to_install(
    closed_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for mod in ("ray", "ray.train", "ray.train.torch"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    with pytest.raises(RayUnavailableError, match=r"pip install 'mmstore\[ray\]'") as info:
        train_head_ray(closed_store, "items", "nope", **OPTIONS)
    assert isinstance(info.value, ImportError) and isinstance(info.value, MMStoreError)


def test_shards_follow_the_record_hash() -> None:
    ids = [f"r{i}" for i in range(101)]
    train = torch.arange(101)
    shards = [World(rank=r, size=3).shards(train, ids) for r in range(3)]
    owners = shard_owners(ids, 3)
    for rank, shard in enumerate(shards):
        assert set(shard.rows.tolist()) == set(np.flatnonzero(owners == rank).tolist())
        assert len(shard.epoch(seed=0, epoch=1)) == shard.longest == max(shard.sizes)
    assert sum(shards[0].sizes) == 101  # each row on exactly one rank
    # a record keeps its rank whatever else is in the data set
    assert shard_owners(ids[:10], 3).tolist() == owners[:10].tolist()
    epoch1, epoch2 = shards[1].epoch(seed=0, epoch=1), shards[1].epoch(seed=0, epoch=2)
    assert set(epoch1.tolist()) == set(shards[1].rows.tolist()) and not torch.equal(epoch1, epoch2)


def test_rank_left_without_rows_refused() -> None:
    with pytest.raises(InvalidInputError, match="fewer workers"):
        World(rank=0, size=4).shards(torch.arange(1), ["only"])


def test_worker_mmstore_error_raised_as_itself() -> None:
    from mmstore.distributed import ray_train

    cause = InvalidInputError("rank 1 refused")
    wrapper = RuntimeError("Training failed due to worker errors")
    wrapper.worker_failures = {1: cause, 0: RuntimeError("peer gone")}  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match="rank 1 refused") as info:
        ray_train._reraise_worker_error(wrapper)
    assert info.value.__cause__ is wrapper
    ray_train._reraise_worker_error(RuntimeError("not a worker failure"))  # left to the caller


def test_report_rebuilt_from_head_json(closed_store: Path) -> None:
    """Where Ray returns no value from the workers, rank 0's head.json gives the report."""
    from mmstore.distributed import ray_train

    with mmstore.open(closed_store) as st:
        trained = st.collection("items").train_head("clf", **{**OPTIONS, "epochs": 2})
    rebuilt = ray_train._report_from_disk(closed_store, "items", "clf")
    assert rebuilt.metrics == trained.metrics and rebuilt.files == trained.files
    assert rebuilt.history == trained.history and rebuilt.split_rows == trained.split_rows


def test_the_docs_example_runs(
    tmp_path: Path, ray_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/heads-distributed.md's ``train_head_ray`` example as written (5 epochs, not
    100), on a store whose ``image`` and ``text`` fields hold vectors."""
    from tests.test_docs_examples import block, products_of_vectors

    monkeypatch.chdir(tmp_path)
    products_of_vectors(tmp_path / "catalog.mms")
    ns: dict[str, Any] = {}
    exec(block("docs/heads-distributed.md:35", **{"epochs=100": "epochs=5"}), ns)
    assert isinstance(ns["report"], HeadReport) and ns["report"].name == "category"
    assert ns["report"].metrics["distributed"]["world_size"] == 2
