"""An IVF index rescores from the float32 vectors where the catalog keeps them, the rows of
its field's segment file (:mod:`mmstore.index.rows`): its index file holds the codes only,
so every float is stored once. A reopened index reads the same rows and answers the same;
a compaction that moves the rows moves the index's with them; a field that grows adds
rows; and a damaged block is refused before one of its vectors scores a hit.

Bad inputs tried: a flipped byte in a block that a search rescores from (refused with
DamagedVectorsError, and `verify` names it), rows moved by a compaction under a loaded
index, and vectors added after a reopen (to codes read in place from the mapped file, which
FAISS cannot grow: the index reads a copy first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmstore
from mmstore.index import file as indexfile
from mmstore.storage import digest
from mmstore.testing import stored_vectors

DIM, N, K = 32, 6000, 10
SPEC = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}
INDEX = {"kind": "ivf_sq8", "ann_threshold": 1000}

pytestmark = pytest.mark.kernels  # an IVF index is trained


def clustered(n: int, seed: int) -> np.ndarray:
    """Normalized points around 50 fixed centres (neighbourhoods an IVF index can find)."""
    centres = np.random.default_rng(0).normal(size=(50, DIM))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 50, n)] + 0.1 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ingest(col: Any, x: np.ndarray, start: int = 0) -> None:
    col.ingest([{"id": f"r{start + i}", "e": v} for i, v in enumerate(x)])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    with mmstore.open(path) as s:
        col = s.create_collection("v", SPEC, index=INDEX)
        ingest(col, clustered(N, 1))
        col.optimize()
        assert col.info()["fields"][0]["index"]["kind"] == "ivf_sq8"
    return path


def searched(col: Any, queries: np.ndarray) -> list[tuple[list[str], list[float]]]:
    out = []
    for q in queries:
        hits = col.search(vector=q, k=K)
        out.append((list(hits.ids), [round(float(s), 5) for s in hits.scores]))
    return out


def exact(col: Any, queries: np.ndarray) -> list[list[str]]:
    """The exact top ``K`` ids over what the catalog holds now."""
    rows = stored_vectors(col)
    ids, x = [r["record_id"] for r in rows], np.stack([r["vector"] for r in rows])
    return [[ids[i] for i in np.argsort(-(x @ q), kind="stable")[:K]] for q in queries]


def recall(got: list[tuple[list[str], list[float]]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / K for (g, _), t in zip(got, truth, strict=True)]))


def index_file(path: Path) -> Path:
    (mmi,) = (path / "indexes" / "v").glob("*.mmi")
    return mmi


def test_the_index_file_holds_codes_and_the_floats_come_from_rows(store: Path) -> None:
    queries = clustered(40, 2)
    head = indexfile.header(digest.mapped(index_file(store)))
    assert head["floats"] == "rows" and head["layout"]["base"][1] == 0
    assert index_file(store).stat().st_size < N * DIM * 4 / 2  # codes, vids, lists
    with mmstore.open(store) as s:
        col = s.collection("v")
        index = col.indexes.get(col.fields["e"])
        assert index.ann is not None and index.ann.source is not None
        first = searched(col, queries)
        assert recall(first, exact(col, queries)) >= 0.95
        x = {r["record_id"]: r["vector"] for r in stored_vectors(col)}
        for q, (ids, scores) in zip(queries, first, strict=True):  # exact, rescored scores
            assert np.allclose(scores, [float(x[i] @ q) for i in ids], atol=1e-4)
    with mmstore.open(store) as s:
        assert searched(s.collection("v"), queries) == first


def test_a_flipped_byte_in_a_rescored_block_is_refused(store: Path) -> None:
    query = clustered(1, 3)[0]
    with mmstore.open(store) as s:
        col = s.collection("v")
        (top, *_), _ = searched(col, query[None])[0]
        sql = "SELECT pos FROM mms_embeddings WHERE record_id = ?"
        (row,) = s.catalog.query_arrow(sql, [top]).column("pos").to_pylist()
    (seg,) = (store / "vectors" / "v").glob("*.f32")
    data = bytearray(seg.read_bytes())
    data[row * DIM * 4 + 5] ^= 0x10  # the top hit's row
    seg.write_bytes(bytes(data))
    with mmstore.open(store) as s:
        col = s.collection("v")
        with pytest.raises(mmstore.DamagedVectorsError, match=seg.name):
            col.search(vector=query, k=K)
        (report,) = col.verify()
        assert report["vectors"].startswith("damaged") and seg.name in report["vectors"]


def test_a_compaction_moves_the_rows_and_the_index_follows(store: Path) -> None:
    queries = clustered(40, 4)
    with mmstore.open(store) as s:
        col = s.collection("v")
        col.search(vector=queries[0], k=K)  # the index is loaded, bound to generation 0
        col.delete([f"r{i}" for i in range(0, N, 3)])
        col.optimize()
        (seg,) = (store / "vectors" / "v").glob("*.f32")
        assert seg.name.endswith(".1.f32")  # rewritten without the deleted rows
        got = searched(col, queries)
        assert recall(got, exact(col, queries)) >= 0.95
        assert not any(int(i[1:]) % 3 == 0 for ids, _ in got for i in ids)
    with mmstore.open(store) as s:
        assert searched(s.collection("v"), queries) == got


def test_vectors_added_after_a_reopen_are_found_from_their_rows(store: Path) -> None:
    more = clustered(2000, 5)
    with mmstore.open(store) as s:
        col = s.collection("v")
        loaded = col.indexes.get(col.fields["e"]).ann
        assert loaded is not None and loaded.viewed is not None  # codes read in place
        ingest(col, more, start=N)
        col.optimize()  # the new vectors join the IVF index, their rows with them
        index = col.indexes.get(col.fields["e"])
        assert index.n_base == N + len(more) and index.ann is not None
        assert index.ann.viewed is None  # FAISS cannot add to a view: it read a copy
        assert index.ann.source is not None
        for i in range(0, len(more), 250):
            assert col.search(vector=more[i], k=1).ids == [f"r{N + i}"]


def test_vectors_read_back_as_float32_with_or_without_an_ann_index() -> None:
    from mmstore.index.vectors import VectorIndex

    index = VectorIndex(DIM)
    index.add(np.arange(1, 11), clustered(10, 6))
    assert index.vectors_at(np.arange(3)).dtype == np.float32  # heads feed them to torch


def test_a_filtered_search_reads_the_filters_rows_only(store: Path, monkeypatch: Any) -> None:
    """A filter small enough for an exact scan gathers its own rows from the segment, never
    every row of the field (which took 50 ms a search on 100,000 x 384)."""
    query, wanted = clustered(1, 4)[0], [f"r{i}" for i in range(0, N, 10)]
    with mmstore.open(store) as s:
        col = s.collection("v")
        source = col.indexes.get(col.fields["e"]).ann.source
        read: list[int] = []
        take = source.take
        monkeypatch.setattr(source, "take", lambda rows: read.append(len(rows)) or take(rows))
        hits = col.search(vector=query, k=K, where={"id": {"$in": wanted}})
        x = {r["record_id"]: r["vector"] for r in stored_vectors(col) if r["record_id"] in wanted}
    assert sum(read) == len(wanted)
    truth = sorted(x, key=lambda i: -float(x[i] @ query))[:K]
    assert list(hits.ids) == truth
