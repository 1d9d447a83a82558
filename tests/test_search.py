"""Search: by field value, vector and record; filters; k hits whenever k records match;
fusion of several queries; results as Arrow and pandas; bad queries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

import mmstore

from .conftest import make_records


@pytest.fixture
def filled(col: mmstore.Collection) -> mmstore.Collection:
    col.ingest(make_records(200))
    return col


def test_text_search_finds_the_matching_record_first(filled: mmstore.Collection) -> None:
    rec = make_records(200)[17]
    hits = filled.search(text=rec["text"], k=5)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert rec["id"] in [h.id for h in hits if h.score > 0.999]
    assert hits.scores == sorted(hits.scores, reverse=True)
    assert len(hits) == 5


def test_hits_carry_the_records_fields(filled: mmstore.Collection) -> None:
    hit = filled.search(text=make_records(4)[3]["text"], k=1, where={"id": "r3"})[0]
    assert (hit.id, hit.field, hit.modality, hit.label) == ("r3", "text", "text", "c3")
    assert hit.meta == {"price": 3, "brand": "acme", "n": 3}
    assert hit.values == {"text": make_records(4)[3]["text"]}


def test_vector_search(vec_col: mmstore.Collection) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    vec_col.ingest([{"id": str(i), "emb": v} for i, v in enumerate(vectors)])
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(normed @ normed[7]))[:5]
    assert vec_col.search(vector=vectors[7] * 3, k=5).ids == [str(i) for i in expected]


def test_record_search_excludes_the_record_itself(filled: mmstore.Collection) -> None:
    hits = filled.search(record="r5", k=3)
    assert "r5" not in hits.ids and len(hits) == 3
    same_text = [r["id"] for r in make_records(200) if r["text"] == make_records(6)[5]["text"]]
    assert hits[0].id in same_text and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_record_search_for_a_missing_record(filled: mmstore.Collection) -> None:
    with pytest.raises(mmstore.NotFoundError, match="'nope'"):
        filled.search(record="nope")


def test_filtered_search_returns_k_hits_whenever_k_match(vec_col: mmstore.Collection) -> None:
    """The matching records are all far from the query; an unfiltered top-k holds none."""
    rng = np.random.default_rng(2)
    query = np.ones(16, np.float32)
    near = [
        {"id": f"near{i}", "emb": query + rng.normal(0, 0.01, 16), "label": "no"}
        for i in range(500)
    ]
    far = [
        {"id": f"far{i}", "emb": -query + rng.normal(0, 0.5, 16), "label": "yes"} for i in range(12)
    ]
    vec_col.ingest(near + far)
    assert all(h.id.startswith("near") for h in vec_col.search(vector=query, k=10))
    hits = vec_col.search(vector=query, k=10, where={"label": "yes"})
    assert len(hits) == 10 and all(h.id.startswith("far") for h in hits)
    assert len(vec_col.search(vector=query, k=20, where={"label": "yes"})) == 12


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"label": "c1"}, lambda r: r["label"] == "c1"),
        ({"meta.price": {"$lt": 10}}, lambda r: r["meta"]["price"] < 10),
        ({"price": {"$gte": 95}}, lambda r: r["meta"]["price"] >= 95),
        (
            {"brand": {"$in": ["acme", "omni"]}, "price": {"$lt": 30}},
            lambda r: r["meta"]["brand"] in ("acme", "omni") and r["meta"]["price"] < 30,
        ),
        (
            {"$or": [{"label": "c0"}, {"brand": "zeta"}]},
            lambda r: r["label"] == "c0" or r["meta"]["brand"] == "zeta",
        ),
        ({"$not": {"label": {"$nin": ["c2"]}}}, lambda r: r["label"] == "c2"),
        ({"id": {"$in": ["r1", "r2", "zz"]}}, lambda r: r["id"] in ("r1", "r2")),
        (
            {"brand": {"$ne": "acme"}, "n": {"$gt": 150}},
            lambda r: r["meta"]["brand"] != "acme" and r["meta"]["n"] > 150,
        ),
    ],
)
def test_filters_select_exactly_the_matching_records(
    filled: mmstore.Collection, where: Any, expected: Any
) -> None:
    want = {r["id"] for r in make_records(200) if expected(r)}
    got = set(filled.search(text="apple", k=200, where=where).ids)
    assert got == want
    assert filled.count(where) == len(want)


def test_missing_metadata_key_semantics(col: mmstore.Collection) -> None:
    col.ingest(
        [
            {"id": "a", "text": "x", "meta": {"color": "red"}},
            {"id": "b", "text": "x"},
            {"id": "c", "text": "x", "meta": {"color": 5}},
        ]
    )

    def ids(where: Any) -> set[str]:
        return set(col.search(text="x", k=10, where=where).ids)

    assert ids({"color": "red"}) == {"a"}
    assert ids({"color": {"$ne": "red"}}) == {"b", "c"}
    assert ids({"color": {"$exists": False}}) == {"b"}
    assert ids({"color": {"$exists": True}}) == {"a", "c"}
    assert ids({"color": {"$gt": 1}}) == {"c"}  # a string never compares with a number


def test_timestamp_filters(col: mmstore.Collection) -> None:
    base = dt.datetime(2026, 1, 1)
    col.ingest([{"id": str(d), "text": "x", "ts": base + dt.timedelta(days=d)} for d in range(10)])
    hits = col.search(text="x", k=10, where={"ts": {"$gte": base + dt.timedelta(days=7)}})
    assert sorted(hits.ids) == ["7", "8", "9"]
    aware = dt.datetime(2026, 1, 3, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert col.count({"ts": {"$lte": aware}}) == 3


def test_results_convert_to_arrow_and_pandas(filled: mmstore.Collection) -> None:
    hits = filled.search(text="apple", k=4)
    table = hits.to_arrow()
    assert table.num_rows == 4 and table.column("id").to_pylist() == hits.ids
    frame = hits.to_pandas()
    assert list(frame["id"]) == hits.ids and frame["score"].is_monotonic_decreasing


TWO_TEXT_FIELDS = {
    "title": {"encoder": "hash_text", "modality": "text"},
    "body": {"encoder": "hash_text", "modality": "text"},
}


def test_fusion_of_two_queries(store: mmstore.Store) -> None:
    col = store.create_collection("two", encoders=TWO_TEXT_FIELDS)
    col.ingest(
        [
            {"id": "both", "title": "red apple", "body": "fresh fruit"},
            {"id": "title_only", "title": "red apple", "body": "car engine"},
            {"id": "body_only", "title": "blue sky", "body": "fresh fruit"},
        ]
    )
    rrf = col.search(title="red apple", body="fresh fruit", target="title", k=3)
    assert rrf.ids[0] == "both"
    assert (rrf[0].field, rrf[0].modality) == ("title", "text")
    weighted = col.search(
        title="red apple",
        body="fresh fruit",
        target="body",
        k=3,
        fusion="weighted",
        weights={"title": 0.0, "body": 1.0},
    )
    assert set(weighted.ids[:2]) == {"both", "body_only"}


def test_fields_in_one_space_are_searched_across(store: mmstore.Store) -> None:
    col = store.create_collection("two", encoders=TWO_TEXT_FIELDS)
    col.ingest(
        [
            {"id": "a", "title": "zzz", "body": "red apple"},
            {"id": "b", "title": "red apple", "body": "zzz"},
        ]
    )
    assert col.search(title="red apple", target="body", k=1).ids == ["a"]
    assert col.search(text="red apple", target="title", k=1).ids == ["b"]


def test_fields_in_different_spaces_need_a_head(store: mmstore.Store) -> None:
    col = store.create_collection(
        "two",
        encoders={
            "title": {"encoder": "hash_text", "modality": "text", "dim": 32},
            "body": {"encoder": "hash_text", "modality": "text", "dim": 64},
        },
    )
    col.ingest([{"id": "a", "title": "x", "body": "y"}])
    with pytest.raises(mmstore.SpaceMismatchError, match="train_head.*retrieval"):
        col.search(title="x", target="body")


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"text": "x", "k": 0}, "k must be"),
        ({"text": "x", "k": 10_001}, "k must be"),
        ({"text": "x", "k": 2.5}, "k must be"),
        ({"text": "x", "fusion": "max"}, "fusion"),
        ({}, "give something to search with"),
        ({"text": ""}, "empty"),
        ({"text": "x", "target": "nope"}, "unknown field"),
        ({"image": "x"}, "encodes image into the space of field 'text'"),
        ({"sound": "x"}, "query field or modality"),
        ({"vector": [1.0, 2.0]}, "shape"),
        ({"vector": [float("nan")] * 64}, "NaN"),
        ({"vector": "abc"}, "vector="),
        ({"text": "x", "where": {"price": {"$regex": "a"}}}, "unknown operator"),
        ({"text": "x", "where": {"$xor": []}}, "unknown logical operator"),
        ({"text": "x", "where": {"a'b": 1}}, "invalid field"),
        ({"text": "x", "where": {"price": None}}, "use \\$exists"),
        ({"text": "x", "where": {"price": {"$in": "abc"}}}, "takes a list"),
        ({"text": "x", "where": ["label"]}, "mapping"),
        ({"text": "x", "where": {"ts": "2026"}}, "datetime"),
    ],
)
def test_bad_queries_give_typed_errors(
    filled: mmstore.Collection, kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(mmstore.MMStoreError, match=says) as err:
        filled.search(**kwargs)
    assert err.value.http_status in (400, 404)
