"""Alignment: ``col.dataset`` (stored vectors row-aligned by record id, masks for missing
fields) and ``store.align`` (an as-of join of two collections by entity and ``ts``).

Bad inputs tried: an unknown collection, an unknown input field, a modality two fields
share, an unknown direction, ``on`` other than ``ts``, tolerances "5 parsecs", "-1s",
"1.5us", "", "5", "5S", " 5s", a negative timedelta and an int; ``by`` values with SQL-ish
characters ("x'; DROP TABLE mms_records; --", 'a"b', "a b", "", "a..b"); a label with
SQL-ish characters; ``ids=`` naming records that are not stored; a subset mask of the
wrong length.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmstore
from mmstore.datasets.asof import parse_tolerance
from mmstore.plugin.events import Event, ReembedProgress
from mmstore.testing import FakePlugin, stored_vectors

T0 = dt.datetime(2024, 1, 1)
US = dt.timedelta(microseconds=1)
VEC = {"encoder": "precomputed", "modality": "vector", "dim": 4}


def at(us: int) -> dt.datetime:
    return T0 + us * US


def stream(store: mmstore.Store, name: str, rows: list[tuple[str, Any, Any]]) -> None:
    """A collection of (id, entity, ts in microseconds after T0) rows; None leaves one out."""
    col = store.create_collection(name, encoders={"emb": VEC}, exist_ok=True)
    records = []
    for i, (rid, entity, us) in enumerate(rows):
        rec: dict[str, Any] = {"id": rid, "emb": [1.0, float(i), 0.0, 1.0]}
        if entity is not None:
            rec["meta"] = {"entity": entity}
        if us is not None:
            rec["ts"] = at(us)
        records.append(rec)
    if records:
        col.ingest(records)


def matches(store: mmstore.Store, **kw: Any) -> dict[str, str | None]:
    table = store.align("left", "right", by=kw.pop("by", "entity"), **kw)
    left, right = table.column("left_id").to_pylist(), table.column("right_id").to_pylist()
    return dict(zip(left, right, strict=True))


# -- store.align ----------------------------------------------------------------------------
def test_exact_timestamp_matches_both_directions(store: mmstore.Store) -> None:
    stream(store, "left", [("l1", "a", 100), ("l2", "b", 200)])
    stream(store, "right", [("r1", "a", 100), ("r2", "b", 200), ("r3", "a", 99)])
    for direction in ("backward", "forward"):
        table = store.align("left", "right", by="entity", direction=direction, tolerance="0s")
        assert table.to_pylist() == [
            dict(left_id="l1", entity="a", left_ts=at(100), right_id="r1", right_ts=at(100))
            | {"lag": dt.timedelta(0)},
            dict(left_id="l2", entity="b", left_ts=at(200), right_id="r2", right_ts=at(200))
            | {"lag": dt.timedelta(0)},
        ]
    assert table.schema.field("lag").type == pa.duration("us")


def test_ties_go_to_the_smallest_right_id(store: mmstore.Store) -> None:
    stream(store, "left", [("l1", "a", 100), ("l2", "a", 300)])
    stream(store, "right", [("r9", "a", 50), ("r2", "a", 50), ("r5", "a", 50), ("r1", "a", 40)])
    stream(store, "right", [("r0", "a", 400), ("r3", "a", 400)])
    for _ in range(3):
        assert matches(store) == {"l1": "r2", "l2": "r2"}
        assert matches(store, direction="forward") == {"l1": "r0", "l2": "r0"}


def test_tolerance_edge_is_inclusive_and_over_it_the_match_is_empty(
    store: mmstore.Store,
) -> None:
    stream(store, "left", [("l1", "a", 1_200_000), ("l2", "b", 1_200_001)])
    stream(store, "right", [("r1", "a", 1_000_000), ("r2", "b", 1_000_000)])
    table = store.align("left", "right", by="entity", tolerance="200ms")
    assert table.column("right_id").to_pylist() == ["r1", None]
    assert table.column("lag").to_pylist() == [dt.timedelta(milliseconds=200), None]
    assert table.column("left_id").to_pylist() == ["l1", "l2"]  # the row is kept
    assert matches(store, tolerance=dt.timedelta(microseconds=200_001)) == {"l1": "r1", "l2": "r2"}
    assert matches(store, tolerance="200000us") == {"l1": "r1", "l2": None}


def test_out_of_tolerance_never_falls_back_to_another_row(store: mmstore.Store) -> None:
    stream(store, "left", [("l1", "a", 10_000)])
    stream(store, "right", [("r1", "a", 0), ("r2", "a", 9_000), ("r3", "b", 10_000)])
    assert matches(store, tolerance="1ms") == {"l1": "r2"}
    assert matches(store, tolerance="999us") == {"l1": None}


def test_late_stream_is_empty_backward_and_matched_forward(store: mmstore.Store) -> None:
    stream(store, "left", [("l1", "a", 100), ("l2", "a", 500)])
    stream(store, "right", [("r1", "a", 600), ("r2", "a", 700)])
    assert matches(store) == {"l1": None, "l2": None}
    assert matches(store, direction="forward") == {"l1": "r1", "l2": "r1"}
    table = store.align("left", "right", by="entity", direction="forward")
    assert table.column("lag").to_pylist() == [500 * US, 100 * US]  # never negative
    assert matches(store, direction="forward", tolerance="100us") == {"l1": None, "l2": "r1"}


def test_missing_streams_keep_every_left_row(store: mmstore.Store) -> None:
    stream(store, "left", [("l1", "a", 100), ("l2", "zz", 100), ("l3", None, 100)])
    stream(store, "left", [("l4", "a", None)])
    stream(store, "right", [])
    assert matches(store) == dict.fromkeys(["l1", "l2", "l3", "l4"])
    stream(store, "right", [("r1", "a", 50), ("r2", None, 50), ("r3", "zz", None)])
    assert matches(store) == {"l1": "r1", "l2": None, "l3": None, "l4": None}
    rows = store.align("left", "right", by="entity").to_pylist()
    assert [r["entity"] for r in rows] == ["a", "zz", None, "a"]
    assert rows[3]["left_ts"] is None


def test_many_interleaved_entities(store: mmstore.Store) -> None:
    rng = np.random.default_rng(3)
    left = [(f"l{i:03d}", f"e{i % 7}", int(rng.integers(0, 10_000))) for i in range(200)]
    right = [(f"r{i:03d}", f"e{i % 5}", int(rng.integers(0, 10_000))) for i in range(300)]
    stream(store, "left", left)
    stream(store, "right", right)
    for direction in ("backward", "forward"):
        got = matches(store, direction=direction, tolerance="2ms")
        assert got == reference(left, right, direction, 2_000)
        assert sum(v is not None for v in got.values()) > 50


def test_by_id_label_and_nested_meta(store: mmstore.Store) -> None:
    a = store.create_collection("left", encoders={"emb": VEC})
    b = store.create_collection("right", encoders={"emb": VEC})
    v = [1.0, 0.0, 0.0, 0.0]
    a.ingest([{"id": "x", "emb": v, "ts": at(10), "label": "p", "meta": {"k": {"e": 7}}}])
    b.ingest([{"id": "x", "emb": v, "ts": at(5), "label": "q", "meta": {"k": {"e": "7"}}}])
    b.ingest([{"id": "y", "emb": v, "ts": at(6), "label": "p"}])
    assert matches(store, by="id") == {"x": "x"}
    assert matches(store, by="label") == {"x": "y"}
    assert matches(store, by="meta.k.e") == {"x": "x"}  # JSON 7 and "7" share their text


def test_align_property_against_a_brute_force_reference(tmp_path: Any) -> None:
    with mmstore.open(tmp_path / "s", plugins=[FakePlugin()]) as store:
        left_col = store.create_collection("left", encoders={"emb": VEC})
        right_col = store.create_collection("right", encoders={"emb": VEC})
        times = st.one_of(st.none(), st.integers(0, 40))
        ents = st.sampled_from(["a", "b", "c", None])
        rows = st.lists(st.tuples(ents, times), max_size=12)

        @settings(max_examples=40, deadline=None, database=None)
        @given(rows, rows, st.sampled_from(["backward", "forward"]), st.integers(0, 25))
        def check(left: Any, right: Any, direction: str, tolerance: int) -> None:
            for c in (left_col, right_col):
                c.delete(
                    c.store.catalog.query_arrow(
                        "SELECT id FROM mms_records WHERE collection = ?", [c.name]
                    )
                    .column("id")
                    .to_pylist()
                )
            lrows = [(f"l{i:02d}", e, t) for i, (e, t) in enumerate(left)]
            # ids shuffled against time so that ties test the id rule, not insertion order
            rrows = [(f"r{(i * 7) % 13:02d}", e, t) for i, (e, t) in enumerate(right)]
            stream(store, "left", lrows)
            stream(store, "right", rrows)
            got = matches(store, direction=direction, tolerance=f"{tolerance}us")
            assert got == reference(lrows, rrows, direction, tolerance)

        check()


def reference(left: list[Any], right: list[Any], direction: str, tolerance: int) -> dict:
    out: dict[str, str | None] = {}
    for lid, ent, t in left:
        best = None
        for rid, rent, rt in right:
            if ent is None or t is None or rent != ent or rt is None:
                continue
            lag = t - rt if direction == "backward" else rt - t
            if lag < 0:
                continue
            if best is None or (lag, rid) < best:
                best = (lag, rid)
        out[lid] = best[1] if best is not None and best[0] <= tolerance else None
    return out


@pytest.mark.parametrize(
    "text, micros",
    [
        ("200ms", 200_000),
        ("5s", 5_000_000),
        ("2m", 120_000_000),
        ("1h", 3_600_000_000),
        ("1.5s", 1_500_000),
        ("0s", 0),
        ("3us", 3),
        ("1d", 86_400_000_000),
    ],
)
def test_tolerance_strings(text: str, micros: int) -> None:
    assert parse_tolerance(text) == micros
    assert parse_tolerance(dt.timedelta(microseconds=micros)) == micros


@pytest.mark.parametrize(
    "bad", ["5 parsecs", "-1s", "1.5us", "", "5", "5S", " 5s", "1e3s", -US, 5, None]
)
def test_bad_tolerances_are_refused(store: mmstore.Store, bad: Any) -> None:
    stream(store, "left", [("l1", "a", 1)])
    stream(store, "right", [("r1", "a", 1)])
    with pytest.raises(mmstore.InvalidInputError, match="tolerance"):
        parse_tolerance(bad)
    if bad is not None:
        with pytest.raises(mmstore.InvalidInputError, match="tolerance") as err:
            store.align("left", "right", by="entity", tolerance=bad)
        assert err.value.http_status == 400


@pytest.mark.parametrize(
    "kw, error, says",
    [
        ({"left": "nope"}, mmstore.UnknownNameError, "unknown collection 'nope'"),
        ({"right": "rigth"}, mmstore.UnknownNameError, "did you mean 'right'"),
        ({"direction": "sideways"}, mmstore.InvalidInputError, "direction"),
        ({"on": "updated_at"}, mmstore.InvalidInputError, "'ts'"),
        ({"by": "x'; DROP TABLE mms_records; --"}, mmstore.InvalidInputError, "invalid by"),
        ({"by": 'a"b'}, mmstore.InvalidInputError, "invalid by"),
        ({"by": "a b"}, mmstore.InvalidInputError, "invalid by"),
        ({"by": ""}, mmstore.InvalidInputError, "invalid by"),
        ({"by": "a..b"}, mmstore.InvalidInputError, "invalid by"),
    ],
)
def test_bad_align_arguments_raise_typed_errors(
    store: mmstore.Store, kw: dict[str, Any], error: type, says: str
) -> None:
    stream(store, "left", [("l1", "a", 1)])
    stream(store, "right", [("r1", "a", 1)])
    args = {"left": "left", "right": "right", "by": "entity"} | kw
    with pytest.raises(error, match=says):
        store.align(args.pop("left"), args.pop("right"), **args)
    assert len(store.collection("right")) == 1


def test_align_dataset_rows_follow_the_left_records(store: mmstore.Store) -> None:
    stream(store, "left", [("l2", "a", 100), ("l1", "b", 100), ("l3", "zz", 100)])
    stream(store, "right", [("r1", "a", 90), ("r2", "b", 10), ("r3", "a", 95)])
    inputs = {"left": ["emb"], "right": ["vector"]}
    lds, rds = store.align_dataset("left", "right", by="entity", inputs=inputs, tolerance="50us")
    assert lds.ids == rds.ids == ["l1", "l2", "l3"] and rds.labels is None
    assert rds.masks["emb"].tolist() == [False, True, False]  # l1's match is out of tolerance
    right = store.collection("right").dataset(["emb"], ids=["r3"])
    assert rds.inputs["emb"][1].equal(right.inputs["emb"][0]) and not rds.inputs["emb"][0].any()
    assert rds.keys == right.keys
    with pytest.raises(mmstore.InvalidInputError, match="inputs"):
        store.align_dataset("left", "right", by="entity", inputs={"left": ["emb"]})


# -- col.dataset ----------------------------------------------------------------------------
@pytest.fixture
def two(store: mmstore.Store) -> mmstore.Collection:
    """Records with a 4-d vector field, a text field, both, or one of them."""
    col = store.create_collection(
        "two", encoders={"emb": VEC, "text": {"encoder": "hash_text", "dim": 8}}
    )
    col.ingest(
        [
            {"id": "c", "emb": [3, 0, 0, 0], "text": "red apple", "label": "x"},
            {"id": "a", "emb": [0, 1, 0, 0], "label": "y", "meta": {"kind": "k1"}},
            {"id": "b", "text": "green pear", "label": "x", "meta": {"kind": "k2"}},
            {"id": "d", "text": "blue plum"},
        ]
    )
    return col


def stored(col: mmstore.Collection, field: str, rid: str) -> np.ndarray:
    """The stored vector of one record, read on its own (not through a dataset)."""
    key = col.active[field].key
    (row,) = [
        r
        for r in stored_vectors(col)
        if (r["field"], r["record_id"], r["encoder_key"]) == (field, rid, key)
    ]
    return row["vector"]


def test_dataset_masks_missing_fields_and_orders_by_id(two: mmstore.Collection) -> None:
    ds = two.dataset(["emb", "text"])
    assert ds.ids == ["a", "b", "c", "d"] and len(ds) == 4
    assert ds.masks["emb"].tolist() == [True, False, True, False]
    assert ds.masks["text"].tolist() == [False, True, True, True]
    assert ds.inputs["emb"].shape == (4, 4) and ds.inputs["text"].shape == (4, 8)
    assert ds.inputs["emb"].dtype == ds.inputs["text"].dtype == torch.float32
    for name in ("emb", "text"):
        for i, rid in enumerate(ds.ids):
            got = ds.inputs[name][i].numpy()
            if ds.masks[name][i]:
                np.testing.assert_array_equal(got, stored(two, name, rid))
            else:
                assert not got.any()
    assert ds.keys == {"emb": two.active["emb"].key, "text": two.active["text"].key}
    top = two.store.catalog.query_arrow("SELECT max(vid) AS v FROM mms_embeddings")
    assert ds.watermark == top.column("v")[0].as_py()
    assert ds.labels == ["y", "x", "x", None]


def test_a_record_with_none_of_the_inputs_is_still_a_row(two: mmstore.Collection) -> None:
    ds = two.dataset(["vector"], label=None)  # the modality of exactly one field
    assert ds.ids == ["a", "b", "c", "d"] and list(ds.inputs) == ["emb"]
    assert ds.masks["emb"].tolist() == [True, False, True, False] and ds.labels is None


def test_label_codes_and_meta_labels(two: mmstore.Collection) -> None:
    ds = two.dataset(["emb"])
    codes, classes = ds.label_codes()
    assert classes == ["x", "y"] and codes.tolist() == [1, 0, 0, -1]
    assert codes.dtype.is_floating_point is False and str(codes.dtype) == "torch.int64"
    codes, classes = ds.label_codes(["y", "z"])
    assert classes == ["y", "z"] and codes.tolist() == [0, -1, -1, -1]
    assert two.dataset(["emb"], label="kind").labels == ["k1", "k2", None, None]
    assert two.dataset(["emb"], label="meta.kind").labels == ["k1", "k2", None, None]
    with pytest.raises(mmstore.InvalidInputError, match="without labels"):
        two.dataset(["emb"], label=None).label_codes()
    with pytest.raises(mmstore.InvalidInputError, match="invalid label"):
        two.dataset(["emb"], label="x') OR 1=1 --")


def test_where_and_ids_restrict_the_rows(two: mmstore.Collection) -> None:
    ds = two.dataset(["emb", "text"], where={"label": "x"})
    assert ds.ids == ["b", "c"] and ds.masks["emb"].tolist() == [False, True]
    ds = two.dataset(["emb"], ids=["d", "a"])
    assert ds.ids == ["a", "d"] and ds.masks["emb"].tolist() == [True, False]
    assert two.dataset(["emb"], ids=["d", "a"], where={"label": "y"}).ids == ["a"]
    assert two.dataset(["emb"], ids=[]).ids == []
    with pytest.raises(mmstore.NotFoundError, match=r"2 record id\(s\).*'nope'"):
        two.dataset(["emb"], ids=["a", "nope", "zip"])


def test_subset_by_mask_and_positions(two: mmstore.Collection) -> None:
    ds = two.dataset(["emb", "text"])
    sub = ds.subset(ds.masks["emb"])
    assert sub.ids == ["a", "c"] and sub.labels == ["y", "x"]
    assert sub.masks["emb"].all() and sub.inputs["emb"].equal(ds.inputs["emb"][[0, 2]])
    assert ds.subset([3, 0]).ids == ["d", "a"] and ds.subset(np.array([], int)).ids == []
    with pytest.raises(mmstore.InvalidInputError, match="shape"):
        ds.subset([True, False])


def test_bad_inputs_are_refused(two: mmstore.Collection, store: mmstore.Store) -> None:
    with pytest.raises(mmstore.UnknownNameError, match="unknown input field 'imag'"):
        two.dataset(["imag"])
    with pytest.raises(mmstore.InvalidInputError, match="twice"):
        two.dataset(["emb", "vector"])
    with pytest.raises(mmstore.InvalidInputError, match="non-empty"):
        two.dataset([])
    both = store.create_collection("both", encoders={"a": VEC, "b": VEC})
    with pytest.raises(mmstore.UnknownNameError, match="has fields"):
        both.dataset(["vector"])


class Probe:
    """Builds a dataset in the middle of a re-embedding, while both spaces are stored."""

    def __init__(self) -> None:
        self.col: mmstore.Collection | None = None
        self.seen: list[Any] = []

    @mmstore.hookimpl
    def mmstore_track_event(self, event: Event) -> None:
        if isinstance(event, ReembedProgress) and self.col is not None:
            self.seen.append(self.col.dataset(["text"]))


def test_dataset_reads_only_the_active_space(tmp_path: Any) -> None:
    probe = Probe()
    with mmstore.open(tmp_path / "s", plugins=[FakePlugin(), probe]) as store:
        col = store.create_collection("docs", encoders={"text": {"encoder": "hash_text"}})
        col.ingest([{"id": f"r{i}", "text": f"word{i} red"} for i in range(30)])
        old = col.dataset(["text"])
        probe.col = col
        col.reembed("text", encoder={"encoder": "hash_text", "dim": 32}, batch_size=10)
        assert len(probe.seen) == 3
        for mid in probe.seen:  # the new space is partly filled: never mixed in
            assert mid.keys == old.keys and mid.inputs["text"].equal(old.inputs["text"])
        new = col.dataset(["text"])
        assert new.keys == {"text": col.fields["text"].key} != old.keys
        assert new.inputs["text"].shape == (30, 32) and bool(new.masks["text"].all())
        assert new.watermark > old.watermark


def test_dataset_reads_vectors_in_bulk(store: mmstore.Store) -> None:
    n, dim = 20_000, 64
    col = store.create_collection(
        "big", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": dim}}
    )
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    col.ingest(
        pa.table(
            {
                "id": [f"v{i:05d}" for i in range(n)],
                "emb": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
            }
        )
    )
    queries: list[str] = []
    real = store.catalog.query_arrow

    def counting(sql: str, params: Any = None) -> pa.Table:
        queries.append(sql)
        return real(sql, params)

    store.catalog.query_arrow = counting  # type: ignore[method-assign]
    start = time.perf_counter()
    ds = col.dataset(["emb"], label=None)
    elapsed = time.perf_counter() - start
    assert len(queries) <= 3  # one for the records, one per field: never one per row
    assert elapsed < 10.0  # about 0.1 s here; a per-row path would take far longer
    np.testing.assert_allclose(ds.inputs["emb"].numpy(), vectors, atol=1e-6)
    assert bool(ds.masks["emb"].all()) and ds.ids[:2] == ["v00000", "v00001"]
