"""The columnar write path: Arrow tables, batches and pandas frames are checked column by
column, and store exactly what the record path (one dict per record) stores, with the
same errors for the same bad rows: ragged lists, NaN in the middle of a column, nulls,
a wrong-dimension column, duplicate ids within one table, bad ids and labels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import mmstore
from mmstore.ingest import sources
from mmstore.testing import FakePlugin, stored_vectors

DIM = 8
SPEC = {
    "emb": {"encoder": "precomputed", "modality": "vector", "dim": DIM},
    "text": {"encoder": "hash_text", "dim": 16},
}


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _fixed(vectors: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def good_table(n: int = 50) -> pa.Table:
    vectors = _vectors(n)
    labels = [None if i % 7 == 0 else f"c{i % 3}" for i in range(n)]
    ts = [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i) for i in range(n)]
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "label": labels,
            "ts": pa.array(ts, pa.timestamp("us", tz="Europe/Paris")),
            "meta": [None if i % 5 else {"shelf": i, "tags": ["a", "b"]} for i in range(n)],
            "emb": _fixed(vectors),
            "text": [None if i % 4 == 0 else f"item number {i}" for i in range(n)],
        }
    )


def bad_table() -> pa.Table:
    """Every kind of bad row a column can hold, beside good ones."""
    ok = _vectors(12, seed=1).tolist()
    ok[3][4] = float("nan")  # NaN in the middle of the column
    ok[5] = ok[5][:5]  # ragged: too short
    ok[6] = [*ok[6], 1.0]  # ragged: too long
    ok[7] = None  # a null vector, and no text: no field at all
    ok[8][2] = None  # a null inside a vector
    ok[9] = []  # an empty vector
    ids = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "a", None]
    return pa.table(
        {
            "id": ids,  # "a" twice (a duplicate within one table), and a null id
            "label": ["x"] * 12,
            "emb": pa.array(ok, pa.list_(pa.float64())),
        }
    )


def _open(path: Path, *plugins: Any) -> mmstore.Store:
    return mmstore.open(path, plugins=[FakePlugin(), *plugins])


def stored(col: mmstore.Collection) -> dict[str, Any]:
    """What the catalog holds of every record: its row (content hash included) and vectors."""
    catalog = col.store.catalog
    with catalog.reading() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, content_hash, label, ts, meta, sources FROM mms_records "
            "WHERE collection = ? ORDER BY id",
            (col.name,),
        ).fetchall()
    vectors = sorted(
        (v["record_id"], v["field"], v["source_hash"], v["vector"].tobytes())
        for v in stored_vectors(col)
    )
    return {"rows": [tuple(r) for r in rows], "vectors": vectors}


def both_paths(tmp_path: Path, source: Any, records: list[dict[str, Any]], **kw: Any) -> tuple:
    """Ingest ``source`` (columnar) and ``records`` (the record path) into two stores."""
    out = []
    for name, given in (("columns", source), ("records", records)):
        with _open(tmp_path / name) as store:
            col = store.create_collection("c", encoders=SPEC)
            report = col.ingest(given, on_error="skip", **kw)
            out.append((report, stored(col)))
    return tuple(out)


@pytest.fixture
def no_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a batch is turned into record dicts (it must go as columns)."""

    def refuse(batch: pa.RecordBatch) -> list[dict[str, Any]]:
        raise AssertionError("the batch went down the record path")

    monkeypatch.setattr(sources, "batch_records", refuse)


# -- the same result as the record path -------------------------------------------------------
def test_a_table_stores_what_its_records_store(tmp_path: Path) -> None:
    table = good_table()
    (cr, cs), (rr, rs) = both_paths(tmp_path, table, table.to_pylist(), chunk_size=16)
    assert cs == rs and len(cs["rows"]) == 50
    assert cs["vectors"] and len(cs["vectors"]) == 50 + sum(1 for i in range(50) if i % 4)
    assert (cr.written, cr.rejected) == (rr.written, rr.rejected) == (50, [])


def test_the_columnar_path_makes_no_record_dicts(tmp_path: Path, no_dicts: None) -> None:
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        assert col.ingest(good_table(), chunk_size=16).written == 50
        again = col.ingest(good_table().to_batches(max_chunksize=20)[0])
        assert (again.written, again.unchanged) == (0, 20)  # same hashes: unchanged


def test_int_ids_int_labels_and_int_vectors_match_the_record_path(tmp_path: Path) -> None:
    ints = np.arange(40 * DIM, dtype=np.int64).reshape(40, DIM) % 11 - 5
    ints[:, 0] = 1  # no zero vectors
    table = pa.table(
        {"id": pa.array(range(40), pa.int64()), "label": range(40), "emb": ints.tolist()}
    )
    (cr, cs), (rr, rs) = both_paths(tmp_path, table, table.to_pylist())
    assert cs == rs and cr.written == rr.written == 40


def test_a_pandas_frame_goes_as_columns_and_stores_what_its_rows_store(tmp_path: Path) -> None:
    vectors = _vectors(30)
    frame = pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(30)],
            "label": [f"c{i % 2}" if i % 3 else None for i in range(30)],
            "emb": list(vectors),
        }
    )
    assert isinstance(next(sources.batches(frame)), pa.RecordBatch)
    records = [r for chunk in sources.chunks(frame) for r in chunk]  # the record path's rows
    (cr, cs), (rr, rs) = both_paths(tmp_path, frame, records)
    assert rr.written == 30
    assert cs == rs and cr.written == 30


def test_a_frame_with_dict_cells_keeps_the_record_path(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "meta": [{"x": 1}, {"y": 2}], "text": ["t", "u"]})
    assert isinstance(next(sources.batches(frame)), list)  # a struct column adds keys
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        col.ingest(frame)
        assert [r["meta"] for r in col.get(["a", "b"])] == [{"x": 1}, {"y": 2}]


# -- bad rows ----------------------------------------------------------------------------------
def test_bad_rows_are_named_as_the_record_path_names_them(tmp_path: Path) -> None:
    table = bad_table()
    (cr, cs), (rr, rs) = both_paths(tmp_path, table, table.to_pylist())
    assert cr.rejected == rr.rejected and cs == rs
    said = {(r.id, r.field): r.reason for r in cr.rejected}
    assert "NaN" in said["d", "emb"] and "NaN" in said["i", "emb"]
    assert "dimension 5" in said["f", "emb"] and "dimension 9" in said["g", "emb"]
    assert "none of the collection's fields" in said["h", None]
    assert "non-empty" in said["j", "emb"]
    assert "more than once" in said["a", "id"]
    assert "needs an id" in said["#11", "id"]
    assert cr.written == 4  # a, b, c and e


@pytest.mark.parametrize(
    ("column", "says"),
    [
        (_fixed(_vectors(3)), "vector has dimension 8, the field expects 4"),
        (pa.array([[1.0, 2, 3, 4], [1.0, float("nan"), 3, 4], [1, 2, 3, 4]]), "NaN"),
        (pa.array([[1.0, 2, 3, 4], [1.0, 2], [1, 2, 3, 4]]), "dimension 2"),
    ],
    ids=["wrong-dimension column", "NaN in the middle", "ragged lists"],
)
def test_a_bad_column_with_raise_writes_nothing(
    tmp_path: Path, no_dicts: None, column: pa.Array, says: str
) -> None:
    with _open(tmp_path / "s") as store:
        col = store.create_collection(
            "c", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
        )
        table = pa.table({"id": ["x", "y", "z"], "emb": column})
        with pytest.raises(mmstore.RecordError, match=says) as caught:
            col.ingest(table)
        assert caught.value.record_id in ("x", "y")
        assert col.count() == 0


def test_a_duplicate_id_across_batches_of_one_call(tmp_path: Path, no_dicts: None) -> None:
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        table = pa.table({"id": ["a", "b", "c", "a"], "emb": _fixed(_vectors(4))})
        with pytest.raises(mmstore.RecordError, match="more than once"):
            col.ingest(table, chunk_size=2)
        assert col.count() == 0
        report = col.ingest(table, chunk_size=2, on_error="skip")
        assert report.written == 3 and [r.id for r in report.rejected] == ["a"]


def test_a_long_id_an_empty_id_and_a_bad_label(tmp_path: Path, no_dicts: None) -> None:
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        table = pa.table(
            {
                "id": ["x" * 600, "", "ok", "ts"],
                "ts": ["2024-01-01", None, None, "yesterday"],
                "emb": _fixed(_vectors(4)),
            }
        )
        report = col.ingest(table, on_error="skip")
        said = [(r.id, r.field) for r in report.rejected]
        assert said == [("x" * 40 + "...", "id"), ("#1", "id"), ("ts", "ts")]
        assert col.count() == 1


def test_an_unknown_column_is_named_by_the_record_path(tmp_path: Path) -> None:
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        table = pa.table({"id": ["a"], "emb": _fixed(_vectors(1)), "colour": ["red"]})
        with pytest.raises(mmstore.RecordError, match="not a field") as caught:
            col.ingest(table)
        assert (caught.value.record_id, caught.value.field) == ("a", "colour")


# -- plugins keep their say ----------------------------------------------------------------------
class Shout:
    """Rewrites text in the record hook only: its batches must take the record path."""

    @mmstore.hookimpl
    def mmstore_prepare_records(self, collection: Any, records: list[dict[str, Any]]) -> None:
        for r in records:
            if "text" in r:
                r["text"] = r["text"].upper()


def test_a_plugin_with_only_the_record_hook_sends_batches_down_the_record_path(
    tmp_path: Path,
) -> None:
    with _open(tmp_path / "s", Shout()) as store:
        col = store.create_collection("c", encoders=SPEC)
        col.ingest(pa.table({"id": ["a"], "text": ["quiet words"]}))
        assert col.get(["a"])[0]["text"] == "QUIET WORDS"


def test_pii_redacts_a_batch_as_it_redacts_records(tmp_path: Path, no_dicts: None) -> None:
    texts = ["write to ann@example.com", "call +44 20 7946 0958 now", None]
    with _open(tmp_path / "s") as store:
        col = store.create_collection(
            "c", encoders=SPEC, options={"pii": {"kinds": ["email", "phone"]}}
        )
        table = pa.table({"id": ["a", "b", "c"], "text": texts, "emb": _fixed(_vectors(3))})
        col.ingest(table)
        got = [r.get("text") for r in col.get(["a", "b", "c"])]
    assert got == ["write to [EMAIL]", "call [PHONE] now", None]


class Veto:
    """Rejects records whose text says 'veto', in both hooks."""

    @mmstore.hookimpl
    def mmstore_prepare_records(self, collection: Any, records: list[dict[str, Any]]) -> None:
        for r in records:
            if r.get("text") == "veto":
                raise mmstore.RecordError(r["id"], "text", "vetoed")

    @mmstore.hookimpl
    def mmstore_prepare_batch(self, collection: Any, batch: pa.RecordBatch) -> None:
        if "veto" in batch.column("text").to_pylist():
            raise mmstore.RecordError("?", "text", "vetoed")


def test_a_batch_hook_rejection_drops_only_its_records_with_skip(tmp_path: Path) -> None:
    with _open(tmp_path / "s", Veto()) as store:
        col = store.create_collection("c", encoders=SPEC)
        table = pa.table({"id": ["a", "b"], "text": ["fine", "veto"]})
        with pytest.raises(mmstore.RecordError, match="vetoed"):
            col.ingest(table)
        report = col.ingest(table, on_error="skip")
        assert report.written == 1 and [r.id for r in report.rejected] == ["b"]


class Shrink:
    @mmstore.hookimpl
    def mmstore_prepare_batch(self, collection: Any, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.slice(1)


def test_a_batch_hook_that_drops_rows_is_a_plugin_error(tmp_path: Path) -> None:
    with _open(tmp_path / "s", Shrink()) as store:
        col = store.create_collection("c", encoders=SPEC)
        with pytest.raises(mmstore.PluginError, match="same 2 rows"):
            col.ingest(pa.table({"id": ["a", "b"], "text": ["x", "y"]}))
        assert col.count() == 0


# -- Parquet files -----------------------------------------------------------------------------
def test_a_parquet_file_is_read_in_batches_as_columns(tmp_path: Path, no_dicts: None) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(good_table(200), path, row_group_size=64)
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        assert col.ingest(path, chunk_size=50).written == 200
        assert col.ingest(str(path)).unchanged == 200
        assert col.ingest(pq.ParquetFile(path)).unchanged == 200
        assert col.get(["r3"])[0]["label"] == "c0"


def test_a_parquet_column_chunk_over_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    from mmstore.ingest import parquet

    path = tmp_path / "big.parquet"
    pq.write_table(good_table(200), path, row_group_size=200, compression="none")
    monkeypatch.setattr(parquet, "MAX_CHUNK_BYTES", 4096)  # stands for 1 GiB: 200 x 8 x 4 > 4096

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file was read")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", never)
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        with pytest.raises(mmstore.InvalidInputError, match="row group 0.*row_group_size") as e:
            col.ingest(path)
        assert "'emb" in str(e.value) and "big.parquet" in str(e.value)
        assert col.count() == 0


def test_paths_that_are_not_parquet_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with _open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=SPEC)
        with pytest.raises(mmstore.InvalidInputError, match="cannot read it as Parquet"):
            col.ingest(broken)
        with pytest.raises(mmstore.InvalidInputError, match="mmstore ingest FILE"):
            col.ingest(tmp_path / "rows.csv")
        assert col.count() == 0


def test_batch_norms_are_numpys_bit_for_bit_across_blocks() -> None:
    """The cosine normalization of a batch sums each row's squares a block of rows at a
    time; the norms (and so the stored vectors and their hashes) are exactly numpy's."""
    from mmstore.encoding.encode import _norms

    rng = np.random.default_rng(3)
    for rows, dim in ((0, 8), (1, 384), (4095, 16), (4097, 384), (9000, 64)):
        x = rng.normal(size=(rows, dim)) * rng.uniform(0.1, 1e3, size=(rows, 1))
        x = x.astype(np.float32)
        assert np.array_equal(_norms(x, block=4096), np.linalg.norm(x, axis=1, keepdims=True))
