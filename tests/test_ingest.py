"""Ingest: every accepted input shape, upsert by content hash, delete, and bad input.

Bad inputs tried here: a record that is not a mapping, a missing, empty, bool or overlong
id, a duplicate id in one call, an unknown key, a record with no field, empty text, text of
the wrong type, invalid UTF-8 bytes, text over the length limit, a lone surrogate, a
non-mapping / non-JSON / too deep / too large meta, a bad label, a bad timestamp, a
vector of the wrong dimension, a NaN vector, an empty vector, a non-numeric vector, an
encoder returning a wrong shape, NaN values or a zero vector, and bad arguments
(on_error, chunk_size, source type). Each gives a typed error naming the record, and
nothing of the failed call is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

import mmstore
from mmstore.plugin.encoder import Encoder
from mmstore.storage import schema
from mmstore.testing import HashTextEncoder

from .conftest import make_records


def counts(store: mmstore.Store) -> tuple[int, int, int]:
    """Rows of records, embeddings and committed ingest runs."""
    runs = schema.ingest_runs
    with store.catalog.reading() as conn:

        def n(t: sa.Table, *where: Any) -> int:
            stmt = sa.select(sa.func.count()).select_from(t).where(*where)
            return int(conn.execute(stmt).scalar_one())

        return (n(schema.records), n(schema.embeddings), n(runs, runs.c.status == "committed"))


def failed_runs(store: mmstore.Store) -> list[str]:
    runs = schema.ingest_runs
    with store.catalog.reading() as conn:
        rows = conn.execute(sa.select(runs.c.status).where(runs.c.status != "committed"))
        return [r.status for r in rows]


class CountingEncoder(HashTextEncoder):
    name = "counting"
    calls: list[int] = []

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        type(self).calls.append(len(items))
        return super().encode(items, modality)


@pytest.fixture
def counting(store: mmstore.Store) -> mmstore.Collection:
    class Plugin:
        @mmstore.hookimpl
        def mmstore_register_encoders(self) -> list[type[Encoder]]:
            return [CountingEncoder]

    CountingEncoder.calls = []
    store.plugins.register(Plugin(), name="counting_plugin")
    return store.create_collection("counted", encoders={"text": "counting"})


def test_ingest_list_of_dicts(col: mmstore.Collection) -> None:
    report = col.ingest(make_records(50))
    assert (report.received, report.written, report.unchanged, report.rejected) == (50, 50, 0, [])
    assert report.encoded == 50 and len(col) == 50
    assert col.get("r3")[0] == {
        "id": "r3",
        "text": make_records(4)[3]["text"],
        "label": "c3",
        "meta": {"price": 3, "brand": "acme", "n": 3},
    }


def test_ingest_single_dict_and_int_id(col: mmstore.Collection) -> None:
    col.ingest({"id": 7, "text": "seven"})
    assert col.get(7)[0]["id"] == "7"


def test_ingest_arrow_table(col: mmstore.Collection) -> None:
    records = make_records(30)
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "meta"} for r in records])
    assert col.ingest(table, chunk_size=7).written == 30
    assert col.get("r29")[0]["label"] == "c4"


def test_ingest_pandas_frame_with_missing_values(col: mmstore.Collection) -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b"],
            "text": ["x y", "z"],
            "label": ["l", None],
            "ts": [pd.Timestamp("2026-01-02T03:04:05Z"), pd.NaT],
        }
    )
    col.ingest(frame)
    a, b = col.get(["a", "b"])
    assert a["ts"] == dt.datetime(2026, 1, 2, 3, 4, 5) and a["label"] == "l"
    assert "label" not in b and "ts" not in b


def test_ingest_arrow_vectors_without_per_float_objects(vec_col: mmstore.Collection) -> None:
    vectors = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"v{i}" for i in range(100)],
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 16),
        }
    )
    assert vec_col.ingest(table).written == 100
    hits = vec_col.search(vector=vectors[42], k=1)
    assert hits.ids == ["v42"] and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_ingest_generator_is_read_lazily_in_chunks(col: mmstore.Collection) -> None:
    pulled: list[int] = []

    def gen() -> Iterator[dict[str, Any]]:
        for i, r in enumerate(make_records(25)):
            pulled.append(i)
            yield r

    seen_at_encode: list[int] = []

    class Spy:
        @mmstore.hookimpl(wrapper=True)
        def mmstore_encode_batch(self, encoder: Any, items: Any, modality: str) -> Any:
            seen_at_encode.append(len(pulled))
            return (yield)

    col.store.plugins.register(Spy(), name="spy")
    assert col.ingest(gen(), chunk_size=10).written == 25
    assert seen_at_encode == [10, 20, 25]  # each chunk encoded before the next is read


def test_reingest_unchanged_does_not_reencode(counting: mmstore.Collection) -> None:
    counting.ingest(make_records(20))
    assert sum(CountingEncoder.calls) == 20
    report = counting.ingest(make_records(20))
    assert (report.written, report.unchanged, report.encoded) == (0, 20, 0)
    assert sum(CountingEncoder.calls) == 20


def test_update_of_metadata_only_keeps_the_vector(counting: mmstore.Collection) -> None:
    counting.ingest(make_records(5))
    changed = make_records(5)
    changed[2]["meta"] = {"price": 999}
    report = counting.ingest(changed)
    assert (report.written, report.unchanged, report.encoded) == (1, 4, 0)
    assert counting.get("r2")[0]["meta"] == {"price": 999}
    assert counting.search(text=changed[2]["text"], k=1, where={"price": 999}).ids == ["r2"]


def test_update_of_text_reencodes_and_replaces_the_vector(col: mmstore.Collection) -> None:
    col.ingest([{"id": "a", "text": "apple"}, {"id": "b", "text": "banana"}])
    col.ingest([{"id": "a", "text": "cherry"}])
    assert col.search(text="cherry", k=1).ids == ["a"]
    assert col.search(text="apple", k=2).scores[0] < 0.5
    store = col.store
    assert counts(store)[:2] == (2, 2)


def test_delete_by_id(col: mmstore.Collection) -> None:
    col.ingest(make_records(10))
    assert col.delete(["r1", "r2", "nope"]) == 2
    assert len(col) == 8
    assert "r1" not in col.search(text=make_records(2)[1]["text"], k=10).ids
    with pytest.raises(mmstore.NotFoundError, match="'r1'"):
        col.get("r1")
    assert col.delete("r1") == 0


def test_get_raises_naming_missing_ids_and_keeps_order(col: mmstore.Collection) -> None:
    col.ingest(make_records(3))
    assert [r["id"] for r in col.get(["r2", "r0"])] == ["r2", "r0"]
    with pytest.raises(mmstore.NotFoundError, match="'x'") as err:
        col.get(["r0", "x"])
    assert err.value.http_status == 404 and isinstance(err.value, KeyError)


BAD_RECORDS: list[tuple[Any, str, str]] = [
    ("not a record", "#5", "mapping"),
    ({"text": "no id"}, "#5", "needs an id"),
    ({"id": "", "text": "x"}, "#5", "needs an id"),
    ({"id": True, "text": "x"}, "#5", "needs an id"),
    ({"id": "x" * 600, "text": "x"}, "xxxx", "longer than"),
    ({"id": "a", "txt": "typo"}, "'a', field 'txt'", "not a field"),
    ({"id": "a"}, "'a'", "none of the collection's fields"),
    ({"id": "a", "text": "   "}, "'a', field 'text'", "empty"),
    ({"id": "a", "text": 42}, "'a', field 'text'", "expected text"),
    ({"id": "a", "text": b"\xff\xfe"}, "'a', field 'text'", "not valid UTF-8"),
    ({"id": "a", "text": "w " * 60_000}, "'a', field 'text'", "limit"),
    ({"id": "a", "text": "bad \ud800 surrogate"}, "'a', field 'text'", "surrogate"),
    ({"id": "a", "text": "x", "meta": [1, 2]}, "field 'meta'", "mapping"),
    ({"id": "a", "text": "x", "meta": {"o": object()}}, "field 'meta'", "JSON"),
    ({"id": "a", "text": "x", "meta": {"f": float("nan")}}, "field 'meta'", "JSON"),
    ({"id": "a", "text": "x", "meta": {1: "int key"}}, "field 'meta'", "keys must be strings"),
    ({"id": "a", "text": "x", "meta": {"big": "y" * 70_000}}, "field 'meta'", "larger than"),
    ({"id": "a", "text": "x", "label": ["l"]}, "field 'label'", "str or int"),
    ({"id": "a", "text": "x", "ts": "yesterday"}, "field 'ts'", "ISO 8601"),
    ({"id": "a", "text": "x", "ts": float("inf")}, "field 'ts'", "not finite"),
    ({"id": "a", "text": "x", "ts": [2026]}, "field 'ts'", "datetime"),
]


def _deep(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(n):
        out = {"k": out}
    return out


@pytest.mark.parametrize(
    ("bad", "names", "says"),
    [
        *BAD_RECORDS,
        ({"id": "a", "text": "x", "meta": _deep(20)}, "field 'meta'", "deeper"),
    ],
)
def test_bad_record_raises_and_writes_nothing(
    col: mmstore.Collection, bad: Any, names: str, says: str
) -> None:
    good = make_records(5)
    with pytest.raises(mmstore.RecordError) as err:
        col.ingest([*good, bad])
    assert names in str(err.value) and says in str(err.value)
    assert err.value.http_status == 422 and isinstance(err.value, ValueError)
    assert counts(col.store) == (0, 0, 0)
    assert failed_runs(col.store) == ["failed: RecordError"]
    assert col.search(text=good[0]["text"], k=5).ids == []


def test_skip_reports_every_rejected_record_and_writes_the_rest(col: mmstore.Collection) -> None:
    batch = [*make_records(5), *[b for b, _, _ in BAD_RECORDS if isinstance(b, dict)]]
    report = col.ingest(batch, on_error="skip")
    # the first record with id "a" claims the id: later ones are refused as duplicates
    assert report.written == 5
    rejected = [(r.id, r.field, r.reason) for r in report.rejected]
    assert rejected[4][:2] == ("a", "txt") and rejected[0][:2] == ("#5", "id")
    assert all("more than once" in reason for _, _, reason in rejected[5:])
    assert all(r.reason for r in report.rejected)
    assert len(report.rejected) == len(batch) - report.written
    assert counts(col.store)[0] == 5


def test_duplicate_id_in_one_call(col: mmstore.Collection) -> None:
    dup = [{"id": "a", "text": "one"}, {"id": "a", "text": "two"}]
    with pytest.raises(mmstore.RecordError, match="'a'.*more than once"):
        col.ingest(dup)
    assert len(col) == 0
    report = col.ingest(dup, on_error="skip")
    assert report.written == 1 and report.rejected[0].id == "a"
    assert col.get("a")[0]["text"] == "one"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([1.0] * 15, "dimension 15"),
        ([float("nan")] * 16, "NaN"),
        ([], "non-empty"),
        ("abc", "not a numeric vector"),
        ([[1.0] * 16], "1-d"),
    ],
)
def test_bad_vectors_are_refused(vec_col: mmstore.Collection, value: Any, says: str) -> None:
    with pytest.raises(mmstore.RecordError, match=f"'v1', field 'emb'.*{says}"):
        vec_col.ingest([{"id": "v0", "emb": [0.5] * 16}, {"id": "v1", "emb": value}])
    assert counts(vec_col.store) == (0, 0, 0)


class Misbehaving(HashTextEncoder):
    name = "misbehaving"
    mode = "shape"

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        out = super().encode(items, modality)
        if type(self).mode == "shape":
            return out[:, :-1]
        if type(self).mode == "nan":
            out[0, 0] = np.nan
        if type(self).mode == "zero":
            out[:] = 0
        if type(self).mode == "raise":
            raise RuntimeError("model exploded")
        return out


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("shape", "returned"),
        ("nan", "r0.*zero or non-finite"),
        ("zero", "r0.*zero or non-finite"),
        ("raise", "model exploded"),
    ],
)
def test_misbehaving_encoder_gives_a_typed_error(
    store: mmstore.Store, mode: str, says: str
) -> None:
    """A malformed batch fails the call (EncoderError naming the plugin); unusable rows
    reject their records (RecordError naming the record)."""

    class Plugin:
        @mmstore.hookimpl
        def mmstore_register_encoders(self) -> list[type[Encoder]]:
            return [Misbehaving]

    Misbehaving.mode = mode
    store.plugins.register(Plugin(), name="misbehaving_plugin")
    col = store.create_collection("m", encoders={"text": "misbehaving"})
    expected = mmstore.RecordError if mode in ("nan", "zero") else mmstore.EncoderError
    with pytest.raises(expected, match=says) as err:
        col.ingest(make_records(3))
    if expected is mmstore.EncoderError:
        assert getattr(err.value, "plugin", None) == "misbehaving_plugin"
    assert counts(store) == (0, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"on_error": "ignore"}, mmstore.InvalidInputError),
        ({"chunk_size": 0}, mmstore.InvalidInputError),
    ],
)
def test_bad_arguments(col: mmstore.Collection, kwargs: dict[str, Any], exc: type) -> None:
    with pytest.raises(exc):
        col.ingest(make_records(1), **kwargs)


def test_unsupported_source_type(col: mmstore.Collection) -> None:
    with pytest.raises(mmstore.InvalidInputError, match="cannot ingest a int"):
        col.ingest(42)
    with pytest.raises(mmstore.InvalidInputError):
        col.ingest("a string is not a list of records")


def test_ingest_runs_are_recorded(col: mmstore.Collection) -> None:
    col.ingest(make_records(3))
    col.ingest(make_records(4))
    with col.store.catalog.reading() as conn:
        rows = conn.execute(sa.select(schema.ingest_runs).order_by(schema.ingest_runs.c.id)).all()
    assert [(r.status, r.received, r.written, r.unchanged) for r in rows] == [
        ("committed", 3, 3, 0),
        ("committed", 4, 1, 3),
    ]


def test_timestamps_are_stored_in_utc(col: mmstore.Collection) -> None:
    tz = dt.timezone(dt.timedelta(hours=2))
    col.ingest(
        [
            {"id": "a", "text": "x", "ts": dt.datetime(2026, 5, 1, 12, 0, tzinfo=tz)},
            {"id": "b", "text": "y", "ts": "2026-05-01T12:00:00+00:00"},
            {"id": "c", "text": "z", "ts": 0},
            {"id": "d", "text": "w", "ts": dt.date(2026, 5, 1)},
        ]
    )
    got = {r["id"]: r["ts"] for r in col.get(["a", "b", "c", "d"])}
    assert got == {
        "a": dt.datetime(2026, 5, 1, 10),
        "b": dt.datetime(2026, 5, 1, 12),
        "c": dt.datetime(1970, 1, 1),
        "d": dt.datetime(2026, 5, 1),
    }


def test_progress_bar_is_opt_in(col: mmstore.Collection, capsys: pytest.CaptureFixture) -> None:
    col.ingest(make_records(3))
    assert "ingest docs" not in capsys.readouterr().err
    col.ingest(make_records(3, start=10), progress=True)
    assert "ingest docs" in capsys.readouterr().err


class VoidOnZero(HashTextEncoder):
    """Gives a zero vector for texts containing 'void', and NaN for 'nan'."""

    name = "void_hash"

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        out = super().encode(items, modality)
        for i, text in enumerate(items):
            if "void" in text:
                out[i] = 0.0
            if "nan" in text:
                out[i, 0] = np.nan
        return out


class VoidPlugin:
    @mmstore.hookimpl
    def mmstore_register_encoders(self) -> list[type]:
        return [VoidOnZero]


def test_unusable_vectors_reject_their_records_not_the_call(store: mmstore.Store) -> None:
    """Bad inputs: values the encoder turns into a zero or a non-finite vector."""
    store.plugins.register(VoidPlugin())
    col = store.create_collection(
        "v", encoders={"text": "void_hash", "other": {"encoder": "hash_text", "modality": "text"}}
    )
    good = [{"id": f"g{i}", "text": f"red apple {i}", "other": "x"} for i in range(5)]
    with pytest.raises(mmstore.RecordError, match="zero or non-finite") as err:
        col.ingest([*good, {"id": "bad", "text": "void here", "other": "y"}])
    assert (err.value.record_id, err.value.field) == ("bad", "text") and len(col) == 0
    report = col.ingest(
        [
            *good,
            {"id": "bad", "text": "void", "other": "y"},
            {"id": "n", "text": "nan", "other": "z"},
        ],
        on_error="skip",
    )
    assert sorted(r.id for r in report.rejected) == ["bad", "n"] and report.written == 5
    assert len(col) == 5 and col.verify()[0]["ok"] and col.verify()[1]["ok"]
    # a stored record whose new value is unusable keeps its old value and vectors
    report = col.ingest([{"id": "g1", "text": "void now", "other": "changed"}], on_error="skip")
    assert [r.id for r in report.rejected] == ["g1"]
    assert col.get("g1")[0]["text"] == "red apple 1"
    assert col.search(record="g0", target="other", k=10).ids.count("g1") == 1
    assert all(v["ok"] for v in col.verify())
    with pytest.raises(mmstore.InvalidInputError, match="zero or non-finite"):
        col.search(text="void")
