"""Retrieval heads: two towers from a query field to a target field in another embedding
space, trained on stored pairs; test-split Recall@1/5/10 and median rank in both
directions against the untrained baseline; serving through ``col.search(..., head=)``
(a value of the query field, or ``record=``, with filters), save -> reopen -> same hits,
the projected index following writes, and stale heads after a re-embed.

Bad inputs tried: query == target, an unknown query field, an unknown target field, an
unknown option, a bad split, ``dp=`` (classifier heads only), ``inputs=``, no query, too
few paired records (a filter leaving none; 5 of 30), a search through an unknown head, a
classifier head given as head=, a query field that is not the head's query, a target that
is not the head's target, an unknown target, vector= with a head, two queries with a
head, a query of the wrong dimension, record= of a record without the query field and of
an unknown record, and searching through a stale head."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmstore
from mmstore.errors import (
    EncoderChangedError,
    InvalidInputError,
    NotFoundError,
    StaleHeadError,
    UnknownNameError,
)
from mmstore.testing import FakePlugin

pytestmark = pytest.mark.kernels  # also run on portable CPU kernels (Makefile)

DQ, DT = 16, 24
N = 500  # paired records; also some with only one of the two fields
FAST = {"epochs": 60, "patience": 10, "batch_size": 64, "hidden": 128, "out_dim": 32, "lr": 3e-3}
SPEC = {
    "q": {"encoder": "precomputed", "modality": "vector", "dim": DQ, "space": "sound"},
    "t": {"encoder": "precomputed", "modality": "vector", "dim": DT, "space": "picture"},
    "c": {"encoder": "precomputed", "modality": "vector", "dim": 8},
}
PNG = b"\x89PNG\r\n\x1a\n"


def pair_vectors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``t`` is a fixed random nonlinear map of ``q`` plus noise."""
    maps = np.random.default_rng(7)
    a, b = maps.normal(size=(DQ, 32)), maps.normal(size=(32, DT))
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, DQ))
    t = np.tanh(q @ a / 4) @ b + 0.3 * rng.normal(size=(n, DT))
    return q.astype(np.float32), t.astype(np.float32)


def records(n: int = N, seed: int = 0, prefix: str = "p") -> list[dict[str, Any]]:
    q, t = pair_vectors(n, seed)
    rng = np.random.default_rng(seed + 1)
    out: list[dict[str, Any]] = [
        {
            "id": f"{prefix}{i}",
            "q": q[i].tolist(),
            "t": t[i].tolist(),
            "c": rng.normal(size=8).tolist(),
            "label": f"k{i % 2}",
            "meta": {"n": i},
        }
        for i in range(n)
    ]
    return out


def extras() -> list[dict[str, Any]]:
    """7 records with only q, 5 with only t, 3 with neither (only c)."""
    q, t = pair_vectors(12, seed=99)
    c = [[1.0] * 8]
    return (
        [{"id": f"oq{i}", "q": q[i].tolist()} for i in range(7)]
        + [{"id": f"ot{i}", "t": t[i].tolist()} for i in range(5)]
        + [{"id": f"on{i}", "c": c[0]} for i in range(3)]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A store with a trained head ``q2t``, closed; tests open it (or a copy)."""
    path = tmp_path_factory.mktemp("retrieval") / "store.mms"
    with mmstore.open(path, plugins=[FakePlugin()]) as s:
        col = s.create_collection("pairs", encoders=SPEC)
        col.ingest(records() + extras())
        report = col.train_head("q2t", kind="retrieval", query="q", target="t", **FAST)
    yield path, report


def opened(path: Path) -> mmstore.Store:
    return mmstore.open(path, plugins=[FakePlugin()])


def hits_of_paired(col: mmstore.Collection, ids: list[int], **kw: Any) -> list[list[str]]:
    q, _ = pair_vectors(N)
    return [col.search(q=q[i].tolist(), target="t", head="q2t", k=10, **kw).ids for i in ids]


SAMPLE = list(range(0, N, 10))


def test_head_learns_both_directions(trained: tuple[Path, Any]) -> None:
    _, report = trained
    m = report.metrics
    print(report)
    for d in ("query_to_target", "target_to_query"):
        r10, base = m[d]["recall@10"], m["baseline"][d]["recall@10"]
        # measured 1.0 both ways against a baseline of 0.11-0.13, under torch's AVX2 and
        # portable (ATEN_CPU_CAPABILITY=default) kernels alike: the bound has a wide margin
        assert r10 >= 0.8 and r10 > base + 0.3, (d, r10, base)
        assert m[d]["recall@1"] <= m[d]["recall@5"] <= r10
        assert m[d]["median_rank"] <= m["baseline"][d]["median_rank"]
    assert m["rows"] == report.split_rows["test"]
    assert report.excluded == {"no_query": 5, "no_target": 7, "neither": 3}
    assert sum(report.split_rows.values()) == N
    assert 0.01 <= m["temperature"] <= 1.0
    assert report.kind == "retrieval" and report.classes == []
    assert "query to target" in str(report)


def test_artifacts_and_lineage(trained: tuple[Path, Any]) -> None:
    path, report = trained
    folder = path / "heads" / "pairs" / "q2t"
    assert report.path == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "curves.png",
        "head.json",
        "weights.safetensors",
    ]
    assert (folder / "curves.png").read_bytes()[:8] == PNG
    meta = json.loads((folder / "head.json").read_text())
    assert meta["kind"] == "retrieval"
    assert meta["config"]["query"] == "q" and meta["config"]["target"] == "t"
    assert meta["dims"] == {"q": DQ, "t": DT}
    assert meta["metrics"] == json.loads(json.dumps(report.metrics))
    lin = meta["lineage"]
    assert set(lin["fields"]) == {"q", "t"} and lin["records"] == N
    assert lin["fields"]["q"]["space"] != lin["fields"]["t"]["space"]
    with opened(path) as s:
        col = s.collection("pairs")
        for f in ("q", "t"):
            assert lin["fields"][f]["encoder_key"] == col.active[f].key
        (row,) = col.heads()
        assert row["kind"] == "retrieval" and row["stale"] is False
        assert (row["query"], row["target"]) == ("q", "t")


def test_search_through_head(trained: tuple[Path, Any]) -> None:
    path, _ = trained
    q, _ = pair_vectors(N)
    with opened(path) as s:
        col = s.collection("pairs")
        # the head that bridges the spaces is named (issue 17: it said to train one)
        with pytest.raises(mmstore.SpaceMismatchError, match="head 'q2t' bridges them"):
            col.search(q=q[0].tolist(), target="t", k=10)
        found = hits_of_paired(col, SAMPLE)
        rate = np.mean([f"p{i}" in ids for i, ids in zip(SAMPLE, found, strict=True)])
        assert rate >= 0.8, rate  # measured 1.0 (every sampled pair at rank 1), both kernels
        hits = col.search(q=q[0].tolist(), target="t", head="q2t", k=5)
        assert len(hits) == 5 and all(h.field == "t" for h in hits)
        assert hits[0].score >= hits[-1].score
        assert {"n"} <= hits[0].meta.keys() or hits[0].id.startswith("ot")
        # the target defaults to the head's
        assert col.search(q=q[0].tolist(), head="q2t", k=10).ids == found[0]
        # record=: the stored q vector of the record; the record itself is not left out
        by_record = [col.search(record=f"p{i}", head="q2t", k=10).ids for i in SAMPLE]
        assert by_record == found
        assert col.search(record="oq1", head="q2t", k=3).ids  # q only: still a query
        # where= restricts the projected index like a plain search
        odd = col.search(q=q[1].tolist(), head="q2t", k=10, where={"label": "k1"})
        assert odd.ids and all(h.label == "k1" for h in odd)
        assert "p1" in odd.ids  # rank 1 under both kernels (measured): not a near miss


def test_reopen_gives_same_hits(tmp_path: Path, trained: tuple[Path, Any]) -> None:
    path, _ = trained
    with opened(path) as s:
        before = hits_of_paired(s.collection("pairs"), SAMPLE[:10])
    copy = tmp_path / "copy.mms"
    shutil.copytree(path, copy)
    with opened(copy) as s:
        assert hits_of_paired(s.collection("pairs"), SAMPLE[:10]) == before


def test_projected_index_follows_writes(tmp_path: Path, trained: tuple[Path, Any]) -> None:
    path, _ = trained
    copy = tmp_path / "copy.mms"
    shutil.copytree(path, copy)
    q, t = pair_vectors(N)
    with opened(copy) as s:
        col = s.collection("pairs")
        # p3 ranks first for its own query under both kernels (measured), so these three
        # lines test the index following writes, not whether the head learned p3
        assert "p3" in col.search(q=q[3].tolist(), head="q2t", k=10).ids
        col.delete(["p3"])
        assert "p3" not in col.search(q=q[3].tolist(), head="q2t", k=10).ids
        # a new record whose target is the exact one: found through the rebuilt index
        col.ingest([{"id": "new", "t": t[3].tolist()}])
        assert "new" in col.search(q=q[3].tolist(), head="q2t", k=10).ids


def test_same_seed_same_head(store: mmstore.Store) -> None:
    col = store.create_collection("pairs", encoders=SPEC)
    col.ingest(records(200))
    opts = {"query": "q", "target": "t", "epochs": 4, "batch_size": 32}
    one = col.train_head("one", kind="retrieval", seed=3, **opts)
    two = col.train_head("two", kind="retrieval", seed=3, **opts)
    weights = "weights.safetensors"
    assert (one.path / weights).read_bytes() == (two.path / weights).read_bytes()
    assert one.history == two.history and one.metrics == two.metrics
    three = col.train_head("three", kind="retrieval", seed=4, **opts)
    assert (one.path / weights).read_bytes() != (three.path / weights).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"query": "q", "target": "q"}, InvalidInputError, "query and target"),
        ({"query": "nope", "target": "t"}, UnknownNameError, "nope"),
        ({"query": "q", "target": "nope"}, UnknownNameError, "nope"),
        ({"query": "q", "target": "t", "learning_rate": 1}, InvalidInputError, "learning_rate"),
        ({"query": "q", "target": "t", "split": (0.5, 0.5, 0.5)}, InvalidInputError, "split"),
        ({"query": "q", "target": "t", "inputs": ["q"]}, InvalidInputError, "inputs"),
        ({"target": "t"}, InvalidInputError, "query"),
        (
            {"query": "q", "target": "t", "dp": {"epsilon": 1.0, "delta": 1e-5}},
            InvalidInputError,
            "classifier heads only",
        ),
        (
            {"query": "q", "target": "t", "where": {"label": "none"}},
            InvalidInputError,
            "too few paired records",
        ),
    ],
)
def test_bad_training_options(
    store: mmstore.Store, kwargs: dict[str, Any], error: type, match: str
) -> None:
    col = store.create_collection("pairs", encoders=SPEC)
    col.ingest(records(40))
    with pytest.raises(error, match=match):
        col.train_head("h", kind="retrieval", **kwargs)
    assert col.heads() == []


def test_too_few_pairs(store: mmstore.Store) -> None:
    col = store.create_collection("pairs", encoders=SPEC)
    recs = records(30)
    for r in recs[5:]:
        del r["t"]
    col.ingest(recs)
    with pytest.raises(InvalidInputError, match=r"too few paired records.*5 carry both"):
        col.train_head("h", kind="retrieval", query="q", target="t")


def test_bad_searches(trained: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = trained
    copy = tmp_path / "copy.mms"
    shutil.copytree(path, copy)
    q, _ = pair_vectors(2)
    v = q[0].tolist()
    with opened(copy) as s:
        col = s.collection("pairs")
        col.train_head("clf", inputs=["c"], epochs=2)
        with pytest.raises(UnknownNameError, match=r"unknown head 'q2x'.*q2t"):
            col.search(q=v, target="t", head="q2x")
        with pytest.raises(InvalidInputError, match="classifier head"):
            col.search(q=v, target="t", head="clf")
        with pytest.raises(
            InvalidInputError, match=r"maps field 'q' \(query\) to field 't' \(target\)"
        ):
            col.search(c=[0.0] * 8, target="t", head="q2t")
        with pytest.raises(InvalidInputError, match=r"target='t', not 'c'"):
            col.search(q=v, target="c", head="q2t")
        with pytest.raises(UnknownNameError, match="nope"):
            col.search(q=v, target="nope", head="q2t")
        with pytest.raises(InvalidInputError, match="vector= is not taken"):
            col.search(vector=v, head="q2t")
        with pytest.raises(InvalidInputError, match="one query"):
            col.search(q=v, record="p1", head="q2t")
        with pytest.raises(InvalidInputError, match="dimension"):
            col.search(q=[1.0, 2.0], head="q2t")
        with pytest.raises(NotFoundError, match="no vector in field 'q'"):
            col.search(record="ot1", head="q2t")
        with pytest.raises(NotFoundError, match="nope"):
            col.search(record="nope", head="q2t")


def test_stale_after_reembed(store: mmstore.Store) -> None:
    col = store.create_collection(
        "docs",
        encoders={
            "title": {"encoder": "hash_text", "modality": "text", "dim": 32, "seed": 0},
            "body": {"encoder": "hash_text", "modality": "text", "dim": 48, "seed": 1},
        },
    )
    words = ["apple", "banana", "cherry", "red", "green", "blue", "small", "large"]
    col.ingest(
        [
            {"id": f"d{i}", "title": f"{words[i % 8]} {words[(i * 3) % 8]} w{i}", "body": f"w{i}"}
            for i in range(60)
        ]
    )
    col.train_head("t2b", kind="retrieval", query="title", target="body", epochs=3)
    assert len(col.search(title="apple", head="t2b", k=3)) == 3
    # the query field's modality names it too
    assert (
        col.search(text="apple", head="t2b", k=3).ids
        == col.search(title="apple", head="t2b", k=3).ids
    )
    with pytest.raises(mmstore.SpaceMismatchError):
        col.search(title="apple", target="body")
    col.reembed("title", encoder={"encoder": "hash_text", "modality": "text", "dim": 32, "seed": 5})
    (row,) = col.heads()
    assert row["stale"] is True and "'title' was re-embedded" in row["reason"]
    with pytest.raises(StaleHeadError, match="retrain") as err:
        col.search(title="apple", head="t2b", k=3)
    assert isinstance(err.value, EncoderChangedError)
    col.train_head("t2b", kind="retrieval", query="title", target="body", epochs=3)
    assert len(col.search(title="apple", head="t2b", k=3)) == 3
