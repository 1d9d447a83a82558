"""What issue 7 added to search: a batch of queries in one call (``search_many``), hits whose
record fields are filled in on first use, a filter's matching vids kept until the next
write, and the single-vector check without a copy per query.

Bad inputs tried: vectors of the wrong width, a 1-d vector, too many queries, zero and
NaN rows, no batch or two batches, a string instead of a list of texts, an empty batch,
a text that the encoder rejects, a bad k, a bad filter (twice, so the kept answers cannot
hide it)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest

import mmstore
from mmstore.encoding.encode import checked_rows
from mmstore.search import searcher as search_module

from .conftest import make_records

pytestmark = pytest.mark.kernels  # also run on portable CPU kernels (Makefile)


@pytest.fixture
def vectors() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(300, 16)).astype(np.float32)


@pytest.fixture
def filled(vec_col: mmstore.Collection, vectors: np.ndarray) -> mmstore.Collection:
    vec_col.ingest(
        [
            {"id": f"v{i}", "emb": v, "label": f"c{i % 3}", "meta": {"n": i}}
            for i, v in enumerate(vectors)
        ]
    )
    return vec_col


def test_search_many_equals_a_loop_of_searches(
    filled: mmstore.Collection, vectors: np.ndarray
) -> None:
    queries = vectors[:40] + np.random.default_rng(4).normal(0, 0.3, (40, 16)).astype(np.float32)
    many = filled.search_many(queries, k=7)
    assert len(many) == 40
    for q, hits in zip(queries, many, strict=True):
        single = filled.search(vector=q, k=7)
        assert hits.ids == single.ids
        assert hits.scores == pytest.approx(single.scores, abs=1e-6)
    where = {"label": "c1"}
    filtered = filled.search_many(queries, k=5, where=where)
    for q, hits in zip(queries, filtered, strict=True):
        assert hits.ids == filled.search(vector=q, k=5, where=where).ids
        assert all(h.label == "c1" for h in hits)


def test_search_many_exact_scan_is_cut_into_bounded_calls(
    filled: mmstore.Collection, vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose score matrix would pass the bound is searched a few queries a call."""
    monkeypatch.setattr(search_module, "SCORES_PER_CALL", 300 * 7)  # 7 queries per call
    many = filled.search_many(vectors[:30], k=3)
    assert [h.ids[0] for h in many] == [f"v{i}" for i in range(30)]


def test_search_many_with_texts_encodes_once(col: mmstore.Collection) -> None:
    records = make_records(50)
    col.ingest(records)
    texts = [r["text"] for r in records[:6]]
    calls: list[int] = []
    encoder = col.active["text"].encoder
    original = encoder.encode
    encoder.encode = lambda items, modality: calls.append(len(items)) or original(items, modality)  # type: ignore[method-assign]
    many = col.search_many(text=texts, k=3)
    assert calls == [6]
    for text, hits in zip(texts, many, strict=True):
        assert hits.ids == col.search(text=text, k=3).ids
    assert col.search_many(text=[], k=3) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vectors": np.ones((2, 8))}, r"shape \(2, 8\).*\(queries, 16\)"),
        ({"vectors": np.ones(16)}, r"shape \(16,\)"),
        ({"vectors": np.zeros((3, 16))}, r"rows \[0, 1, 2\] are zero"),
        ({"vectors": np.array([[np.nan] * 16, [1.0] * 16])}, r"rows \[0\]"),
        ({"vectors": [["a"] * 16]}, "not a numeric array"),
        ({}, "give one batch of queries"),
        ({"vectors": np.ones((1, 16)), "emb": [np.ones(16)]}, "give one batch of queries"),
        ({"vectors": np.ones((1, 16)), "k": 0}, "k must be an int"),
        ({"vectors": np.ones((1, 16)), "where": {"label": {"$regex": "x"}}}, r"\$regex"),
    ],
)
def test_search_many_bad_batches(filled: mmstore.Collection, kwargs: dict, match: str) -> None:
    for _ in range(2):  # the second time too: nothing kept hides an error
        with pytest.raises(mmstore.MMStoreError, match=match):
            filled.search_many(**kwargs)


def test_search_many_too_many_queries(
    filled: mmstore.Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "MAX_BATCH", 10)
    with pytest.raises(mmstore.InvalidInputError, match="at most 10 queries"):
        filled.search_many(np.ones((11, 16)))


def test_search_many_bad_texts(col: mmstore.Collection) -> None:
    col.ingest(make_records(5))
    with pytest.raises(mmstore.InvalidInputError, match="takes a list of query values, got str"):
        col.search_many(text="one string")
    with pytest.raises(mmstore.InvalidInputError, match=r"query text=\[1\]"):
        col.search_many(text=["fine", 42])


def test_hits_are_filled_on_first_use_and_behave_as_plain_hits(
    filled: mmstore.Collection, vectors: np.ndarray
) -> None:
    hits = filled.search(vector=vectors[5], k=2)
    hit = hits[0]
    plain = mmstore.Hit(**dataclasses.asdict(hit))
    assert (hit.id, hit.label, hit.meta) == ("v5", "c2", {"n": 5})
    assert hit == plain and plain == hit and repr(hit) == repr(plain)
    assert pickle.loads(pickle.dumps(hits)) == hits
    assert type(pickle.loads(pickle.dumps(hit))) is mmstore.Hit
    assert copy.deepcopy(hit) == hit
    hit.meta["n"] = -1  # a copy: the next search is not changed
    hit.label = "changed"
    again = filled.search(vector=vectors[5], k=1)[0]
    assert (again.label, again.meta) == ("c2", {"n": 5})
    assert hits.to_arrow().column("label").to_pylist()[0] == "changed"


def test_a_hit_read_after_a_write_shows_the_record_as_it_was_found(
    filled: mmstore.Collection, vectors: np.ndarray
) -> None:
    before = filled.search(vector=vectors[8], k=1)[0]
    filled.ingest([{"id": "v8", "emb": vectors[8], "label": "new", "meta": {"n": 0}}])
    after = filled.search(vector=vectors[8], k=1)[0]
    assert (before.label, before.meta) == ("c2", {"n": 8})
    assert (after.label, after.meta) == ("new", {"n": 0})


def test_kept_filter_answers_follow_every_write(
    filled: mmstore.Collection, vectors: np.ndarray
) -> None:
    where = {"label": "c0"}
    query = vectors[1]  # label c1: not in the filter
    assert "v1" not in filled.search(vector=query, k=5, where=where).ids
    filled.ingest([{"id": "v1", "emb": query, "label": "c0"}])  # relabelled into it
    assert filled.search(vector=query, k=5, where=where).ids[0] == "v1"
    filled.ingest([{"id": "new", "emb": query, "label": "c0"}])  # a new record in it
    assert set(filled.search(vector=query, k=2, where=where).ids) == {"v1", "new"}
    filled.delete(["v1"])
    assert "v1" not in filled.search(vector=query, k=5, where=where).ids
    assert filled.search(vector=query, k=1, where={"n": {"$gte": 0}, "label": "c0"}).ids
    assert filled.search(vector=query, k=1, where={"id": {"$in": ["v3", "new"]}}).ids == ["new"]


def test_equal_filters_of_other_types_are_not_confused(filled: mmstore.Collection) -> None:
    """``1``, ``1.0`` and ``True`` differ as JSON; each is answered by the catalog."""
    filled.ingest([{"id": "flag", "emb": np.ones(16), "meta": {"x": True}}])
    filled.ingest([{"id": "one", "emb": np.ones(16), "meta": {"x": 1}}])
    flag = filled.search(vector=np.ones(16), k=5, where={"x": True}).ids
    one = filled.search(vector=np.ones(16), k=5, where={"x": 1}).ids
    assert flag == ["flag"] and one == ["one"]


def test_a_vector_query_is_normalized_as_stored_vectors_are(
    filled: mmstore.Collection, vectors: np.ndarray
) -> None:
    """The fast check of one vector scales it bit for bit as ingest scales a batch, so a
    stored vector given as a query scores its own record exactly as ingest stored it."""
    field = filled.active["emb"]
    for v in vectors[:50] * 7.5:
        fast = filled.searcher._raw_vector(v, field)
        stored, bad = checked_rows(field.encoder, field, v[None, :], 1)
        assert not bad.any() and np.array_equal(fast, stored[0])
    assert filled.search(vector=vectors[17] * 7.5, k=1).ids == ["v17"]
    for bad_vector, match in ((np.zeros(16), "cannot be used"), (np.full(16, np.inf), "NaN or")):
        with pytest.raises(mmstore.InvalidInputError, match=match):
            filled.search(vector=bad_vector)
    big = np.full(16, 3e38, np.float32)  # finite, but its squared norm overflows float32
    with pytest.raises(mmstore.InvalidInputError, match="cannot be used"):
        filled.search(vector=big)
