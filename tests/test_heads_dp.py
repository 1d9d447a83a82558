"""Classifier heads with differential privacy (Opacus) and with distributed data parallel
under torchrun (two CPU processes, gloo).

Bad inputs tried: delta of 1/n or more (n the training rows), unknown dp keys, a missing
epsilon, epsilon and delta of zero or below, a delta of 1, a non-positive clipping norm, a
model Opacus cannot train (BatchNorm), and dp asked for inside a process group. The torchrun
head is compared with single-process training (the comparison and its tolerance are in
tests/test_heads_ray.py, with the Ray Train run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import mmstore
from mmstore.errors import InvalidInputError
from mmstore.heads import privacy
from mmstore.heads.distributed import World
from mmstore.heads.options import DPOptions
from mmstore.heads.split import TRAIN, assign_splits

sys.path.insert(0, str(Path(__file__).parent))
from test_heads import FAST, SPEC, N, vector_records
from test_heads_ray import assert_like_single, assert_two_gloo_ranks

pytestmark = pytest.mark.kernels  # also run on portable CPU kernels (Makefile)

DP = {"epsilon": 8.0, "delta": 1e-5}


@pytest.fixture
def vcol(store: mmstore.Store) -> mmstore.Collection:
    col = store.create_collection("items", encoders=SPEC)
    col.ingest(vector_records())
    return col


def test_dp_head_learns_within_budget(vcol: mmstore.Collection) -> None:
    report = vcol.train_head("private", inputs=["a", "b"], dp=DP, **FAST)
    spent = report.metrics["privacy"]
    assert report.metrics["accuracy"] > 0.8  # chance is 1/3
    assert 0 < spent["epsilon"] <= DP["epsilon"]
    assert spent["delta"] == DP["delta"] and spent["target_epsilon"] == DP["epsilon"]
    assert spent["sampling"] == "poisson" and spent["noise_multiplier"] > 0
    assert spent["epochs_run"] == len(report.history) <= spent["epochs_planned"] == FAST["epochs"]
    assert spent["training_rows"] == report.split_rows["train"]
    meta = json.loads((report.path / "head.json").read_text())
    assert meta["metrics"]["privacy"] == spent
    assert meta["config"]["dp"] == {**DP, "max_grad_norm": 1.0}
    # the saved head predicts like any other (Opacus's wrapper and hooks are gone)
    out = vcol.predict("private", ["v0", "v1"])
    assert len(out) == 2 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in out)
    weights = load_file(report.path / "weights.safetensors")
    assert weights and not any(k.startswith("_module") for k in weights)


def test_dp_full_planned_run_spends_about_the_target(vcol: mmstore.Collection) -> None:
    """No early stopping (patience > epochs): the accountant's epsilon reaches the target;
    tiny Poisson batches (some empty) still step."""
    report = vcol.train_head(
        "full", inputs=["a"], dp={**DP, "max_grad_norm": 2.0}, epochs=3, patience=5, batch_size=4
    )
    spent = report.metrics["privacy"]
    assert spent["epochs_run"] == 3
    assert 0.8 * DP["epsilon"] < spent["epsilon"] <= DP["epsilon"] + 1e-6
    assert spent["steps"] == 3 * round(1 / spent["sample_rate"])


def test_dp_same_seed_same_weights(vcol: mmstore.Collection) -> None:
    opts: dict[str, Any] = {"inputs": ["a"], "dp": DP, "epochs": 3, "batch_size": 32}
    r1, r2 = vcol.train_head("one", **opts), vcol.train_head("two", **opts)
    untimed = [
        [{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (r1, r2)
    ]
    assert untimed[0] == untimed[1]
    w = "weights.safetensors"
    assert (r1.path / w).read_bytes() == (r2.path / w).read_bytes()


def test_without_dp_no_privacy_recorded(vcol: mmstore.Collection) -> None:
    report = vcol.train_head("plain", inputs=["a"], epochs=3)
    assert "privacy" not in report.metrics and "distributed" not in report.metrics
    meta = json.loads((report.path / "head.json").read_text())
    assert meta["config"]["dp"] is None


def test_delta_of_one_over_n_refused(vcol: mmstore.Collection) -> None:
    # about 70% of N rows train: 1/n is about 0.006
    with pytest.raises(InvalidInputError, match=r"delta 0.01 is not below 1/n"):
        vcol.train_head("bad", inputs=["a"], dp={"epsilon": 1.0, "delta": 0.01}, epochs=2)
    ids = [r["id"] for r in vector_records()]
    n_train = int((assign_splits(ids, (0.7, 0.15, 0.15)) == TRAIN).sum())
    with pytest.raises(InvalidInputError, match=f"n = {n_train} training rows"):
        vcol.train_head("bad", inputs=["a"], dp={"epsilon": 1.0, "delta": 1 / n_train}, epochs=2)
    assert vcol.heads() == []
    with pytest.raises(InvalidInputError, match="n = 3 training rows"):
        privacy.check_budget(DPOptions(epsilon=1.0, delta=0.34), 3)
    privacy.check_budget(DPOptions(epsilon=1.0, delta=0.33), 3)


@pytest.mark.parametrize(
    "dp, match",
    [
        ({"epsilon": 8, "delta": 1e-5, "sigma": 1.0}, r"dp\.sigma.*Extra inputs"),
        ({"delta": 1e-5}, r"dp\.epsilon.*Field required"),
        ({"epsilon": 0, "delta": 1e-5}, r"dp\.epsilon.*greater than 0"),
        ({"epsilon": -1, "delta": 1e-5}, r"dp\.epsilon"),
        ({"epsilon": float("inf"), "delta": 1e-5}, r"dp\.epsilon"),
        ({"epsilon": 8, "delta": 0}, r"dp\.delta.*greater than 0"),
        ({"epsilon": 8, "delta": 1.0}, r"dp\.delta.*less than 1"),
        ({"epsilon": 8, "delta": 1e-5, "max_grad_norm": 0}, r"dp\.max_grad_norm"),
        ("yes", r"dp"),
    ],
)
def test_bad_dp_options_refused(vcol: mmstore.Collection, dp: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        vcol.train_head("bad", inputs=["a"], dp=dp, epochs=2)


def test_model_opacus_cannot_train_refused() -> None:
    privacy.check_model(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.GELU()))
    with pytest.raises(InvalidInputError, match="differential privacy"):
        privacy.check_model(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))


def test_dp_refused_in_a_process_group(
    vcol: mmstore.Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmstore.heads import train

    monkeypatch.setattr(train, "current", lambda: World(rank=0, size=2, backend="gloo"))
    with pytest.raises(InvalidInputError, match="distributed data parallel"):
        vcol.train_head("bad", inputs=["a"], dp=DP, epochs=2)


def test_shards_cover_the_rows_once_per_epoch() -> None:
    train = torch.arange(10, 40)
    ids = [f"v{i}" for i in range(10, 40)]
    shards = [World(rank=r, size=3).shards(train, ids) for r in range(3)]
    epochs = [s.epoch(seed=0, epoch=4) for s in shards]
    assert {len(e) for e in epochs} == {max(shards[0].sizes)}  # padded to the longest shard
    seen = torch.cat(epochs)
    assert set(seen.tolist()) == set(train.tolist())
    again = World(rank=1, size=3).shards(train, ids).epoch(seed=0, epoch=4)
    assert torch.equal(again, epochs[1])
    assert not torch.equal(shards[1].epoch(seed=0, epoch=5), epochs[1])


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with mmstore.open(path) as st:
        st.create_collection("items", encoders=SPEC).ingest(vector_records())
    # the store is closed: every rank opens it read-only
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "-m",
        "mmstore.distributed.torchrun",
        str(path),
        "items",
        "ddp",
        "--inputs",
        "a,b",
        "--fusion",
        "concat",
        "--epochs",
        "40",
        "--batch-size",
        "32",
        "--option",
        "patience=8",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "head 'ddp' (classifier)" in proc.stdout
    meta = json.loads((path / "heads" / "items" / "ddp" / "head.json").read_text())
    assert_two_gloo_ranks(meta, "torchrun")
    assert meta["metrics"]["accuracy"] > 0.9
    assert sum(meta["split_rows"].values()) == N
    with mmstore.open(path, read_only=True) as st:
        (row,) = st.collection("items").heads()
        assert row["name"] == "ddp" and row["stale"] is False
        assert len(st.collection("items").predict("ddp", ["v0"])) == 1
    leftovers = [p.name for p in (path / "heads" / "items").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    # the same metric as one process, within test_heads_ray.TOLERANCE (justified there)
    print("single vs torchrun:", assert_like_single(path, meta))
