"""Classifier heads trained on stored embeddings: fusion kinds, determinism, the id-hash
split, artifacts and lineage, save -> reopen -> predict, predicting new records without
storing them, masked missing modalities, stale heads after a re-embed.

Bad inputs tried: an unknown input field, an unknown fusion, an unknown option, a bad split,
an unknown head kind and the not-yet-built ``retrieval`` kind, labels of a single class,
no labelled rows, an invalid head name, predicting with an unknown head, predicting a
stored id that does not exist, a record with none of the head's inputs, and a training
that fails while writing (no head folder is left, an older head is kept)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file

import mmstore
from mmstore.errors import (
    ConfigError,
    EncoderChangedError,
    InvalidInputError,
    NotFoundError,
    StaleHeadError,
    UnknownNameError,
)
from mmstore.heads.split import assign_splits, id_fraction
from mmstore.testing import FakePlugin

pytestmark = pytest.mark.kernels  # also run on portable CPU kernels (Makefile)

FAST = {"epochs": 40, "patience": 8, "batch_size": 32}
N, CLASSES = 240, 3
PNG = b"\x89PNG\r\n\x1a\n"


def vector_records(n: int = N, start: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Labels from separable clusters in both fields; every 4th record lacks field b."""
    centers = np.random.default_rng(99)
    ca, cb = centers.normal(size=(CLASSES, 16)) * 3, centers.normal(size=(CLASSES, 8)) * 3
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        c = i % CLASSES
        rec: dict[str, Any] = {"id": f"v{i}", "label": f"k{c}"}
        rec["a"] = (ca[c] + rng.normal(size=16)).astype(np.float32).tolist()
        if i % 4:
            rec["b"] = (cb[c] + rng.normal(size=8)).astype(np.float32).tolist()
        out.append(rec)
    return out


SPEC = {
    "a": {"encoder": "precomputed", "modality": "vector", "dim": 16},
    "b": {"encoder": "precomputed", "modality": "vector", "dim": 8},
}


@pytest.fixture
def vcol(store: mmstore.Store) -> mmstore.Collection:
    col = store.create_collection("items", encoders=SPEC)
    col.ingest(vector_records())
    return col


@pytest.mark.parametrize("fusion", ["concat", "mean", "attention"])
def test_each_fusion_learns(vcol: mmstore.Collection, fusion: str) -> None:
    report = vcol.train_head("clf", inputs=["a", "b"], fusion=fusion, **FAST)
    assert report.metrics["accuracy"] > 0.9
    assert report.metrics["macro_f1"] > 0.9
    assert report.metrics["roc_auc"] > 0.9
    assert report.classes == ["k0", "k1", "k2"]
    assert sum(report.split_rows.values()) == N
    cm = np.array(report.metrics["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == report.metrics["rows"] == report.split_rows["test"]


def test_single_input_head(vcol: mmstore.Collection) -> None:
    report = vcol.train_head("alone", inputs=["a"], **FAST)
    assert report.metrics["accuracy"] > 0.9
    (row,) = vcol.heads()
    assert row["name"] == "alone" and row["inputs"] == ["a"] and row["stale"] is False


def test_same_seed_same_weights(vcol: mmstore.Collection) -> None:
    opts = {"inputs": ["a", "b"], "fusion": "attention", "modality_dropout": 0.3, **FAST}
    r1 = vcol.train_head("one", seed=7, **opts)
    r2 = vcol.train_head("two", seed=7, **opts)
    w1, w2 = load_file(r1.path / "weights.safetensors"), load_file(r2.path / "weights.safetensors")
    assert w1.keys() == w2.keys()
    assert all(bool((w1[k] == w2[k]).all()) for k in w1)
    untimed = [
        [{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (r1, r2)
    ]
    assert untimed[0] == untimed[1]
    weights = "weights.safetensors"
    assert (r1.path / weights).read_bytes() == (r2.path / weights).read_bytes()
    r3 = vcol.train_head("three", seed=8, **opts)
    w3 = load_file(r3.path / "weights.safetensors")
    assert any(not bool((w1[k] == w3[k]).all()) for k in w1)


def test_split_is_by_id_hash() -> None:
    ids = [f"x{i}" for i in range(5000)]
    fractions = (0.6, 0.2, 0.2)
    split = assign_splits(ids, fractions)
    counts = np.bincount(split, minlength=3) / len(ids)
    assert np.allclose(counts, fractions, atol=0.03)
    # the same id lands in the same split in another dataset, whatever its neighbours
    other = ["zz", *ids[::-7], "yy"]
    again = dict(zip(other, assign_splits(other, fractions), strict=True))
    assert all(again[i] == s for i, s in zip(ids, split, strict=True) if i in again)
    assert id_fraction("x1") == id_fraction("x1")


def test_artifacts_and_lineage(vcol: mmstore.Collection, store: mmstore.Store) -> None:
    report = vcol.train_head("clf", inputs=["a", "b"], fusion="mean", **FAST)
    folder = Path(store.path) / "heads" / "items" / "clf"
    assert report.path == folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "confusion.png",
        "curves.png",
        "embedding_map.png",
        "head.json",
        "weights.safetensors",
    ]
    assert all(p.suffix in (".safetensors", ".json", ".png") for p in folder.rglob("*"))
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 1000
    meta = json.loads((folder / "head.json").read_text())
    lin = meta["lineage"]
    assert set(lin["fields"]) == {"a", "b"}
    for f in ("a", "b"):
        assert lin["fields"][f]["encoder_key"] == vcol.active[f].key
        assert lin["fields"][f]["encoder"] == "precomputed"
        assert {"version", "space", "dim"} <= lin["fields"][f].keys()
    assert lin["records"] == N and len(lin["ids_sha256"]) == 64 and lin["watermark"] > 0
    assert meta["kind"] == "classifier" and meta["config"]["fusion"] == "mean"
    assert meta["classes"] == ["k0", "k1", "k2"] and meta["mmstore_version"]
    assert {"accuracy", "macro_f1", "roc_auc", "confusion_matrix"} <= meta["metrics"].keys()
    assert meta["created_at"] and len(meta["history"]) >= 1
    # no leftovers from the atomic write
    assert [p.name for p in folder.parent.iterdir()] == ["clf"]


def test_unlabelled_and_inputless_rows_are_left_out(store: mmstore.Store) -> None:
    col = store.create_collection("items", encoders=SPEC)
    recs = vector_records()
    for r in recs[:10]:
        del r["label"]
    for r in recs[10:15]:  # only b, which the head does not read
        r.pop("a")
        r.setdefault("b", [0.5] * 8)
    col.ingest(recs)
    report = col.train_head("clf", inputs=["a"], **FAST)
    assert report.excluded == {"unlabelled": 10, "no_input": 5}
    assert sum(report.split_rows.values()) == N - 15


def test_reopen_predict_identical(store_path: Path) -> None:
    ids = ["v1", "v2", "v3", "v4", "v8"]  # v4 and v8 have no b: masked
    with mmstore.open(store_path, plugins=[FakePlugin()]) as s:
        col = s.create_collection("items", encoders=SPEC)
        col.ingest(vector_records())
        col.train_head("clf", inputs=["a", "b"], fusion="attention", **FAST)
        before = col.predict("clf", ids)
    with mmstore.open(store_path, plugins=[FakePlugin()]) as s:
        col = s.collection("items")
        after = col.predict("clf", ids)
        assert col.heads()[0]["stale"] is False
    assert before == after
    assert [p["id"] for p in after] == ids
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in after)
    assert [p["label"] for p in after] == ["k1", "k2", "k0", "k1", "k2"]


def test_predict_new_records_without_storing(vcol: mmstore.Collection) -> None:
    vcol.train_head("clf", inputs=["a", "b"], fusion="concat", **FAST)
    new = vector_records(30, start=10_000, seed=5)
    for r in new:
        del r["label"]
    new[0].pop("b", None)
    new[1].pop("b", None)
    out = vcol.predict("clf", new)
    assert len(vcol) == N
    assert [p["id"] for p in out] == [r["id"] for r in new]
    hits = sum(
        p["label"] == f"k{i % CLASSES}" for i, p in zip(range(10_000, 10_030), out, strict=True)
    )
    assert hits >= 27
    # a stored id and a new dict in one call; a single record works too
    mixed = vcol.predict("clf", ["v0", {"a": vector_records(1)[0]["a"]}])
    assert mixed[0]["label"] == mixed[1]["label"] == "k0" and mixed[1]["id"] is None
    # one record alone and in a batch of two: the same label; the probabilities agree to
    # float32 rounding only, since a batch of another shape may take other CPU kernels
    alone = vcol.predict("clf", "v0")[0]
    assert (alone["id"], alone["label"]) == (mixed[0]["id"], mixed[0]["label"])
    assert alone["probabilities"] == pytest.approx(mixed[0]["probabilities"], rel=1e-5, abs=1e-6)


def test_stale_after_reembed(store: mmstore.Store) -> None:
    col = store.create_collection(
        "docs", encoders={"text": {"encoder": "hash_text", "dim": 64, "seed": 0}}
    )
    words = {"k0": "apple banana cherry", "k1": "red green blue", "k2": "small large fresh"}
    col.ingest(
        [
            {"id": f"d{i}", "text": f"{words[f'k{i % 3}']} w{i}", "label": f"k{i % 3}"}
            for i in range(90)
        ]
    )
    col.train_head("txt", inputs=["text"], **FAST)
    assert col.predict("txt", [{"text": "red green blue"}])[0]["label"] == "k1"
    col.reembed("text", encoder={"encoder": "hash_text", "dim": 64, "seed": 1})
    (row,) = col.heads()
    assert row["stale"] is True and "re-embedded" in row["reason"]
    with pytest.raises(StaleHeadError, match="retrain") as err:
        col.predict("txt", ["d1"])
    assert isinstance(err.value, EncoderChangedError) and err.value.http_status == 409
    col.train_head("txt", inputs=["text"], **FAST)  # retraining replaces it
    assert col.heads()[0]["stale"] is False
    assert col.predict("txt", ["d1"])[0]["label"] == "k1"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inputs": ["nope"]}, UnknownNameError, "unknown field 'nope'"),
        ({"inputs": ["a"], "fusion": "sum"}, InvalidInputError, "fusion"),
        ({"inputs": ["a"], "learning_rate": 0.1}, InvalidInputError, "learning_rate"),
        ({"inputs": ["a"], "split": (0.5, 0.5, 0.5)}, InvalidInputError, "split"),
        ({"inputs": ["a"], "kind": "ranker"}, UnknownNameError, "head kind"),
        ({"inputs": ["a"], "kind": "retrieval"}, InvalidInputError, "query"),
        ({}, InvalidInputError, "inputs"),
    ],
)
def test_bad_options(
    vcol: mmstore.Collection, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        vcol.train_head("clf", **kwargs)
    assert vcol.heads() == []


def test_bad_names_and_labels(store: mmstore.Store) -> None:
    col = store.create_collection("items", encoders=SPEC)
    one_class = vector_records(30)
    for r in one_class:
        r["label"] = "same"
    col.ingest(one_class)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        col.train_head("clf", inputs=["a"], **FAST)
    with pytest.raises(ConfigError, match="invalid head name"):
        col.train_head("Bad Name", inputs=["a"], **FAST)
    col.ingest(
        [
            {k: v for k, v in r.items() if k != "label"} | {"id": f"u{i}"}
            for i, r in enumerate(one_class)
        ]
    )
    with pytest.raises(InvalidInputError, match="label"):
        col.train_head("clf", inputs=["a"], label="missing_key", **FAST)
    assert not (Path(store.path) / "heads" / "items" / "clf").exists()
    with pytest.raises(UnknownNameError, match="unknown head 'clf'"):
        col.predict("clf", ["v0"])


def test_predict_errors(vcol: mmstore.Collection) -> None:
    vcol.train_head("clf", inputs=["a", "b"], **FAST)
    with pytest.raises(UnknownNameError, match=r"unknown head 'clg'.*did you mean 'clf'"):
        vcol.predict("clg", ["v0"])
    with pytest.raises(NotFoundError, match="nope"):
        vcol.predict("clf", ["v0", "nope"])
    with pytest.raises(InvalidInputError, match="none of the head's inputs"):
        vcol.predict("clf", [{"id": "empty"}])
    # a new record's value goes through the encoder's check, as at ingest and search
    with pytest.raises(
        InvalidInputError, match=r"'n1'.*field 'a'.*dimension 15, the field expects 16"
    ):
        vcol.predict("clf", [{"id": "n1", "a": [0.1] * 15}])


def test_failed_training_leaves_no_head(
    vcol: mmstore.Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmstore.heads import plots

    def boom(*args: object) -> Path:
        raise RuntimeError("disk full")

    vcol.train_head("kept", inputs=["a"], **FAST)
    kept = (vcol.store.path / "heads" / "items" / "kept" / "weights.safetensors").read_bytes()
    monkeypatch.setattr(plots, "embedding_map", boom)
    for name in ("fresh", "kept"):
        with pytest.raises(RuntimeError, match="disk full"):
            vcol.train_head(name, inputs=["a"], seed=3, **FAST)
    root = vcol.store.path / "heads" / "items"
    assert sorted(p.name for p in root.iterdir()) == ["kept"]
    assert (root / "kept" / "weights.safetensors").read_bytes() == kept


def test_concat_head_predicts_in_its_training_input_order(vcol: mmstore.Collection) -> None:
    """head.json sorts its keys; the concat order must still be the training order."""
    report = vcol.train_head("rev", inputs=["b", "a"], fusion="concat", **FAST)
    ids = [r["id"] for r in vector_records()]
    predicted = vcol.predict("rev", ids)
    accuracy = np.mean(
        [p["label"] == r["label"] for p, r in zip(predicted, vector_records(), strict=True)]
    )
    assert report.metrics["accuracy"] > 0.9 and accuracy > 0.9
    with pytest.raises(mmstore.InvalidInputError, match="iterable"):
        vcol.predict("rev", 5)
    with pytest.raises(mmstore.ConfigError, match="invalid head name"):
        vcol.predict("../items/rev", ids[:1])


def test_dropping_a_collection_drops_its_heads(store: mmstore.Store) -> None:
    col = store.create_collection("items", encoders=SPEC)
    col.ingest(vector_records())
    col.train_head("clf", inputs=["a"], **FAST)
    store.drop_collection("items")
    again = store.create_collection("items", encoders=SPEC)
    assert again.heads() == []
