"""The tabular plugin: the ``tabular`` modality and the fitted ``tabular`` encoder.

Statistics (means, scales, vocabularies) are fitted on a field's first ingest, kept in the
catalog table ``mms_encoder_states``, reused by later ingests, queries and a reopened
store, and forgotten when the ingest that fitted them fails.

Bad inputs tried, each refused with a RecordError naming the record and the field (nothing
written with ``on_error="raise"``, only that record dropped with ``"skip"``): a column the
encoder does not declare, text in a numeric column, NaN, an infinity, a number beyond
float32's range, a number that standardizes beyond it with the fitted statistics, a nested
dict, a list value, an empty mapping, a value that is not a mapping, a non-str column name,
and more columns than ``MAX_COLUMNS``. Configuration errors tried: a column both numeric and
categorical, no column at all, a column listed twice, ``max_categories=0``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mmstore_tabular import MAX_COLUMNS, Tabular, TabularEncoder

import mmstore
from mmstore.testing import check_modality
from mmstore.testing import stored_vectors as stored_rows

NUMERIC = ["price", "weight"]
CATEGORICAL = ["brand", "color"]
MAX_CATEGORIES = 3
PARAMS: dict[str, Any] = {
    "numeric": NUMERIC,
    "categorical": CATEGORICAL,
    "max_categories": MAX_CATEGORIES,
}
FIELD = {"encoder": "tabular", "modality": "tabular", **PARAMS}
DIM = 1 + len(NUMERIC) + len(CATEGORICAL) * (MAX_CATEGORIES + 1)

#: the first ingest: brand acme 3, zeta 2, omni 1; color red 2, then blue, green, yellow
#: once each (ties by value: yellow falls outside a vocabulary of 3); weight has a gap
FIRST: list[dict[str, Any]] = [
    {"price": 10, "weight": 1.0, "brand": "acme", "color": "red"},
    {"price": 20, "weight": 2.0, "brand": "acme", "color": "blue"},
    {"price": 30, "weight": None, "brand": "zeta", "color": "red"},
    {"price": 40, "weight": 4.5, "brand": "omni", "color": "green"},
    {"price": 50, "brand": "zeta", "color": "yellow"},
    {"price": 60, "weight": True, "brand": "acme"},
]
#: a later ingest from another distribution, which must not move the statistics
LATER: list[dict[str, Any]] = [
    {"price": 1000 + 100 * i, "weight": -50.0, "brand": "nova", "color": "red"} for i in range(6)
]


def records(rows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "row": row} for i, row in enumerate(rows)]


def hand_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics the encoder should fit, computed with the standard library."""
    numeric = {}
    for c in NUMERIC:
        present = [float(r[c]) for r in rows if r.get(c) is not None]
        std = statistics.pstdev(present)
        numeric[c] = {"mean": statistics.fmean(present), "scale": std or 1.0}
    categorical = {}
    for c in CATEGORICAL:
        present = [r[c] for r in rows if r.get(c) is not None]
        ranked = sorted(set(present), key=lambda v: (-present.count(v), v))
        categorical[c] = ranked[:MAX_CATEGORIES]
    return {"rows": len(rows), "numeric": numeric, "categorical": categorical}


def hand_vector(row: dict[str, Any], stats: dict[str, Any]) -> np.ndarray:
    """The normalized vector of ``row`` under ``stats``, built component by component."""
    out: list[float] = []
    for c in NUMERIC:
        s = stats["numeric"][c]
        out.append(0.0 if row.get(c) is None else (float(row[c]) - s["mean"]) / s["scale"])
    for c in CATEGORICAL:
        block = [0.0] * (MAX_CATEGORIES + 1)
        if row.get(c) is not None:
            vocab = stats["categorical"][c]
            block[vocab.index(row[c]) if row[c] in vocab else MAX_CATEGORIES] = 1.0
        out.extend(block)
    out.append(1.0)
    v = np.array(out)
    return v / np.linalg.norm(v)


@pytest.fixture
def tab_store(tmp_path: Path) -> Iterator[mmstore.Store]:
    with mmstore.open(tmp_path / "s") as s:
        yield s


@pytest.fixture
def col(tab_store: mmstore.Store) -> mmstore.Collection:
    return tab_store.create_collection("t", encoders={"row": FIELD})


def stored_states(store: mmstore.Store) -> list[tuple[str, str, dict[str, Any]]]:
    t = store.catalog.query_arrow(
        "SELECT field, encoder_key, state FROM mms_encoder_states WHERE collection = 't'"
    )
    return [
        (f, k, json.loads(s))
        for f, k, s in zip(*(t.column(n).to_pylist() for n in t.column_names), strict=True)
    ]


def stored_vectors(store: mmstore.Store) -> dict[str, np.ndarray]:
    rows = stored_rows(store.collection("t"))
    return {r["record_id"]: r["vector"] for r in rows if r["field"] == "row"}


def counts(store: mmstore.Store) -> dict[str, int]:
    tables = ("mms_records", "mms_embeddings", "mms_encoder_states")
    return {
        t: store.catalog.query_arrow(f"SELECT count(*) AS n FROM {t} WHERE collection = 't'")
        .column("n")
        .to_pylist()[0]
        for t in tables
    }


def assert_stats(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["rows"] == want["rows"]
    assert got["categorical"] == want["categorical"]
    assert got["numeric"].keys() == want["numeric"].keys()
    for c, s in want["numeric"].items():
        assert got["numeric"][c] == pytest.approx(s, rel=1e-12)


# -- layout and fitting -------------------------------------------------------------------


def test_dim_is_fixed_by_the_parameters(col: mmstore.Collection) -> None:
    assert col.fields["row"].identity.dim == DIM == 11
    col.ingest(records(FIRST, "a"))
    assert {v.shape for v in stored_vectors(col.store).values()} == {(DIM,)}
    assert TabularEncoder(numeric=["x"], categorical=["y", "z"], max_categories=5).dim == 14


def test_first_ingest_fits_and_stores_the_statistics(col: mmstore.Collection) -> None:
    assert col.fields["row"].encoder.state is None
    col.ingest(records(FIRST, "a"))
    want = hand_stats(FIRST)
    assert want["categorical"] == {
        "brand": ["acme", "zeta", "omni"],
        "color": ["red", "blue", "green"],
    }
    assert want["numeric"]["price"] == {"mean": 35.0, "scale": pytest.approx(17.078251)}
    ((field, key, state),) = stored_states(col.store)
    assert (field, key) == ("row", col.fields["row"].key)
    assert_stats(state, want)
    assert col.fields["row"].encoder.state == state


def test_stored_vectors_follow_the_layout(col: mmstore.Collection) -> None:
    col.ingest(records(FIRST, "a"))
    stats = hand_stats(FIRST)
    vectors = stored_vectors(col.store)
    for i, row in enumerate(FIRST):
        np.testing.assert_allclose(vectors[f"a{i}"], hand_vector(row, stats), atol=1e-6)


def test_a_row_at_the_mean_is_the_bias_alone(col: mmstore.Collection) -> None:
    col.ingest(records(FIRST, "a"))
    col.ingest([{"id": "mean", "row": {"price": 35, "weight": None}}])
    expected = np.zeros(DIM, np.float32)
    expected[-1] = 1.0
    np.testing.assert_allclose(stored_vectors(col.store)["mean"], expected, atol=1e-6)


def test_unseen_category_goes_to_the_oov_slot(col: mmstore.Collection) -> None:
    col.ingest(records(FIRST, "a"))
    # "yellow" was seen, but fewer times than the 3 kept; "nova" was never seen
    col.ingest([{"id": "new", "row": {"brand": "nova", "color": "yellow"}}])
    v = stored_vectors(col.store)["new"]
    brand = slice(len(NUMERIC), len(NUMERIC) + MAX_CATEGORIES + 1)
    color = slice(brand.stop, brand.stop + MAX_CATEGORIES + 1)
    assert np.flatnonzero(v[brand]).tolist() == [MAX_CATEGORIES]
    assert np.flatnonzero(v[color]).tolist() == [MAX_CATEGORIES]
    assert v[-1] > 0 and not v[: len(NUMERIC)].any()


def test_later_ingest_uses_the_first_statistics(col: mmstore.Collection) -> None:
    col.ingest(records(FIRST, "a"))
    first_state = stored_states(col.store)
    col.ingest([*records(LATER, "b"), {"id": "twin", "row": FIRST[3]}])
    assert stored_states(col.store) == first_state
    vectors, stats = stored_vectors(col.store), hand_stats(FIRST)
    np.testing.assert_array_equal(vectors["twin"], vectors["a3"])
    for i, row in enumerate(LATER):
        np.testing.assert_allclose(vectors[f"b{i}"], hand_vector(row, stats), atol=1e-6)


def test_statistics_survive_close_and_reopen(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as store:
        store.create_collection("t", encoders={"row": FIELD}).ingest(records(FIRST, "a"))
        state = stored_states(store)[0][2]
    with mmstore.open(tmp_path / "s") as store:
        col = store.collection("t")
        assert col.fields["row"].encoder.state == state
        assert col.search(row=FIRST[3], k=1).ids == ["a3"]
        col.ingest([{"id": "twin", "row": FIRST[3]}])
        vectors = stored_vectors(store)
        np.testing.assert_array_equal(vectors["twin"], vectors["a3"])
        assert len(stored_states(store)) == 1


# -- search -------------------------------------------------------------------------------


def test_search_uses_the_stored_statistics(col: mmstore.Collection) -> None:
    col.ingest(records(FIRST, "a"))
    col.ingest(records(LATER, "b"))
    query = {"price": 41, "weight": 4.4, "brand": "omni", "color": "green"}
    hits = col.search(row=query, k=4)
    stats = hand_stats(FIRST)
    rows = {f"a{i}": r for i, r in enumerate(FIRST)} | {f"b{i}": r for i, r in enumerate(LATER)}
    scores = {i: float(hand_vector(r, stats) @ hand_vector(query, stats)) for i, r in rows.items()}
    assert hits.ids == sorted(scores, key=lambda i: -scores[i])[:4]
    assert hits.ids[0] == "a3"
    assert hits.scores == pytest.approx([scores[i] for i in hits.ids], abs=1e-5)


def test_query_before_any_ingest_is_refused(col: mmstore.Collection) -> None:
    with pytest.raises(mmstore.InvalidInputError, match="ingest records before searching"):
        col.search(row={"price": 10})


def test_query_with_a_bad_row_is_refused(col: mmstore.Collection) -> None:
    col.ingest(records(FIRST, "a"))
    with pytest.raises(mmstore.InvalidInputError, match="'size' is not declared"):
        col.search(row={"price": 10, "size": 3})
    with pytest.raises(mmstore.InvalidInputError, match="column 'price'.*beyond float32's range"):
        col.search(row={"price": 1e40})


def test_extreme_numbers_in_the_first_chunk_fit_finite_statistics(
    col: mmstore.Collection,
) -> None:
    """Numbers up to float32's largest standardize within its range with the statistics
    fitted on them, so the chunk that fits is never refused for that."""
    rows = [{"price": 3.4e38}, {"price": -3.4e38}, {"price": 1.0}]
    assert col.ingest(records(rows, "x")).written == 3
    vectors = stored_vectors(col.store)
    assert all(np.isfinite(v).all() for v in vectors.values())


# -- failures -----------------------------------------------------------------------------


def test_failed_first_ingest_writes_nothing_and_forgets_the_state(
    col: mmstore.Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first chunk fits and encodes; a bad record in the second fails the call."""
    encoder, fitted = col.fields["row"].encoder, []
    fit = encoder.fit

    def counted(items: list[Any], modality: str) -> dict[str, Any]:
        fitted.append(len(items))
        return fit(items, modality)

    monkeypatch.setattr(encoder, "fit", counted)
    bad = {"id": "bad", "row": {"price": "cheap"}}
    with pytest.raises(mmstore.RecordError) as e:
        col.ingest([*records(FIRST[:2], "a"), bad], chunk_size=2)
    assert (e.value.record_id, e.value.field) == ("bad", "row")
    assert fitted == [2]
    assert counts(col.store) == {"mms_records": 0, "mms_embeddings": 0, "mms_encoder_states": 0}
    assert col.fields["row"].encoder.state is None
    assert col.indexes.get(col.fields["row"]).live == 0
    col.ingest(records(LATER, "b"))
    assert fitted == [2, len(LATER)]
    ((_, _, state),) = stored_states(col.store)
    assert_stats(state, hand_stats(LATER))


BAD_ROWS = {
    "undeclared column": ({"price": 1, "size": 3}, "'size' is not declared"),
    "text in a numeric column": ({"price": "cheap"}, "numeric column 'price'"),
    "nan": ({"price": float("nan")}, "must be finite"),
    "inf": ({"weight": float("-inf")}, "must be finite"),
    "beyond float32": ({"price": 1e40}, "beyond float32's range"),
    "nested dict": ({"brand": {"name": "acme"}}, "holds a dict"),
    "list value": ({"color": ["red"]}, "holds a list"),
    "empty mapping": ({}, "no columns"),
    "not a mapping": ([("price", 1)], "expected a mapping"),
    "non-str key": ({1: 2.0}, "non-empty strings"),
    "too many columns": ({f"c{i}": 1 for i in range(MAX_COLUMNS + 1)}, "limit of 1,024"),
}
ENCODER_CASES = ("undeclared column", "text in a numeric column", "beyond float32")


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_with_raise_writes_nothing(col: mmstore.Collection, case: str) -> None:
    row, problem = BAD_ROWS[case]
    with pytest.raises(mmstore.RecordError, match=problem) as e:
        col.ingest([*records(FIRST, "a"), {"id": "x", "row": row}])
    assert (e.value.record_id, e.value.field) == ("x", "row")
    assert counts(col.store) == {"mms_records": 0, "mms_embeddings": 0, "mms_encoder_states": 0}
    assert col.fields["row"].encoder.state is None


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_with_skip_drops_only_that_record(col: mmstore.Collection, case: str) -> None:
    row, problem = BAD_ROWS[case]
    report = col.ingest([*records(FIRST, "a"), {"id": "x", "row": row}], on_error="skip")
    (rejected,) = report.rejected
    assert (rejected.id, rejected.field) == ("x", "row") and problem in rejected.reason
    assert len(col) == len(FIRST) and "x" not in stored_vectors(col.store)
    assert_stats(stored_states(col.store)[0][2], hand_stats(FIRST))


def test_value_standardized_beyond_float32_after_fitting_is_refused(
    tab_store: mmstore.Store,
) -> None:
    """Fitted on prices 0 and 0.001 (scale 0.0005), 3e38 is within float32 but standardizes
    to 6e41, beyond it: refused naming the column, before anything is written."""
    field = {"encoder": "tabular", "modality": "tabular", "numeric": ["price"]}
    col = tab_store.create_collection("t", encoders={"row": field})
    col.ingest(records([{"price": 0.0}, {"price": 0.001}], "a"))
    later = [{"id": "ok", "row": {"price": 5.0}}, {"id": "x", "row": {"price": 3e38}}]
    with pytest.raises(mmstore.RecordError, match="column 'price'.*standardizes to") as e:
        col.ingest(later)
    assert (e.value.record_id, e.value.field) == ("x", "row")
    assert len(col) == 2
    with pytest.raises(mmstore.InvalidInputError, match="column 'price'.*standardizes to"):
        col.search(row={"price": -3e38})
    report = col.ingest(later, on_error="skip")
    assert [(r.id, r.field) for r in report.rejected] == [("x", "row")]
    assert report.written == 1 and "x" not in stored_vectors(col.store)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"numeric": ["price"], "categorical": ["price"]}, "both numeric and categorical"),
        ({}, "at least one column"),
        ({"numeric": ["price", "price"]}, "more than once"),
        ({"categorical": ["brand"], "max_categories": 0}, "max_categories"),
    ],
)
def test_bad_parameters_are_config_errors(
    tab_store: mmstore.Store, params: dict[str, Any], problem: str
) -> None:
    with pytest.raises(mmstore.ConfigError, match=problem):
        tab_store.create_collection(
            "t", encoders={"row": {"encoder": "tabular", "modality": "tabular", **params}}
        )


# -- the plugin's classes on their own ----------------------------------------------------


def test_modality_conformance() -> None:
    good = [
        {"price": 1, "brand": "acme"},
        {"price": np.float64(2.5), "flag": np.bool_(True), "n": np.int64(3), "gap": None},
        {"weight": False, "note": "é"},
    ]
    # the rest of BAD_ROWS is refused by the encoder, which knows the columns
    bad = [row for case, (row, _) in BAD_ROWS.items() if case not in ENCODER_CASES]
    check_modality(Tabular(), good=good, bad=bad)
    row = Tabular().validate(good[1], "r", "f")
    assert row == {"price": 2.5, "flag": True, "n": 3, "gap": None}
    assert [type(v) for v in row.values()] == [float, bool, int, type(None)]


def test_encoder_without_state_refuses_to_encode() -> None:
    encoder = TabularEncoder(**PARAMS)
    assert encoder.encode([], "tabular").shape == (0, DIM)
    with pytest.raises(mmstore.EncoderError, match="no fitted statistics"):
        encoder.encode([FIRST[0]], "tabular")


def test_encoder_is_batch_independent_and_rebuilds_from_its_state() -> None:
    encoder = TabularEncoder(**PARAMS)
    encoder.load_state(encoder.fit(FIRST, "tabular"))
    batch = encoder.encode(FIRST, "tabular")
    assert batch.dtype == np.float32 and batch.shape == (len(FIRST), DIM)
    singles = np.concatenate([encoder.encode([r], "tabular") for r in FIRST])
    np.testing.assert_array_equal(batch, singles)
    rebuilt = TabularEncoder(**encoder.params.model_dump())
    rebuilt.load_state(json.loads(json.dumps(encoder.state)))
    assert rebuilt.space() == encoder.space()
    np.testing.assert_array_equal(rebuilt.encode(FIRST, "tabular"), batch)


def test_categories_compare_as_strings_and_constant_columns_keep_scale_one() -> None:
    encoder = TabularEncoder(numeric=["n", "gone"], categorical=["c"], max_categories=2)
    state = encoder.fit([{"n": 5, "c": 3}, {"n": 5, "c": 3.0}, {"n": 5, "c": True}], "tabular")
    assert state["numeric"] == {
        "n": {"mean": 5.0, "scale": 1.0},
        "gone": {"mean": 0.0, "scale": 1.0},
    }
    assert state["categorical"] == {"c": ["3", "true"]}
