"""A filter's rows kept gathered between searches (mmstore.index.subset): the same answers
as a fresh gather, never a stale one after a delete, an append, an optimize or a
compaction, a caller's own (writeable) array never kept, and the byte budget held."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import mmstore
from mmstore.config import IndexOptions
from mmstore.index import subset
from mmstore.index.vectors import VectorIndex
from tests.test_index import assert_exact_top, normed

pytestmark = pytest.mark.kernels

DIM = 16


def frozen(vids: np.ndarray) -> np.ndarray:
    """A filter's answer as the search layer hands it over: sorted, read-only."""
    out = np.sort(np.asarray(vids, np.int64))
    out.flags.writeable = False
    return out


@pytest.fixture
def index() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    x = normed(3_000, DIM)
    vids = np.arange(1, 3_001)
    idx = VectorIndex(DIM, IndexOptions(ann_threshold=1_000))
    idx.add(vids, x)
    return idx, x, vids


def test_a_kept_subset_answers_as_a_fresh_gather(index: tuple) -> None:
    idx, x, vids = index
    allowed = frozen(vids[vids % 10 == 3])
    q = normed(30, DIM, seed=1)
    first = idx.search(q, 10, allowed)
    assert len(idx._subsets._kept) == 1  # kept, gathered
    again = idx.search(q, 10, allowed)
    fresh = idx.search(q, 10, np.array(allowed))  # a writeable copy: gathered anew
    np.testing.assert_array_equal(again.vids, first.vids)
    np.testing.assert_array_equal(fresh.vids, first.vids)
    assert_exact_top(again.vids, x, vids, q, 10, np.isin(vids, allowed))


def test_a_callers_writeable_array_is_never_kept(index: tuple) -> None:
    idx, _, vids = index
    mine = vids[vids % 10 == 3].copy()
    idx.search(normed(1, DIM), 10, mine)
    assert not idx._subsets._kept  # the caller may change it: nothing kept could go stale


@pytest.mark.parametrize("change", ["remove", "add", "optimize", "compact"])
def test_no_stale_subset_after_a_change(index: tuple, change: str) -> None:
    idx, x, vids = index
    allowed = frozen(vids[vids % 10 == 3])
    q = normed(10, DIM, seed=2)
    before = idx.search(q, 10, allowed)
    keep = np.isin(vids, allowed)
    if change == "remove":
        gone = np.unique(before.vids[before.vids > 0])
        idx.remove(gone)
        keep &= ~np.isin(vids, gone)
    elif change == "add":
        more = normed(50, DIM, seed=3)
        idx.add(np.arange(3_001, 3_051), more)
        x, vids = np.concatenate([x, more]), np.arange(1, 3_051)
        keep = np.isin(vids, allowed)  # the new vids are not in the kept answer
    elif change == "optimize":
        idx.optimize()  # the tail moves into the approximate index: positions change
    else:
        idx.remove(vids[:1_500])  # half deleted: the next optimize compacts
        idx.optimize()
        keep &= vids > 1_500
    got = idx.search(q, 10, allowed)
    assert_exact_top(got.vids, x, vids, q, 10, keep)
    if change == "remove":
        assert not np.isin(got.vids, gone).any()


def test_kept_subsets_stay_within_the_byte_budget(
    index: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx, _, vids = index
    one = (300 * DIM * 4) + 300 * 8  # a tenth of the rows, with their positions
    monkeypatch.setattr(subset, "FLOOR", 2 * one + 100)
    monkeypatch.setattr(subset, "CAP", 2 * one + 100)
    answers = [frozen(vids[vids % 10 == r]) for r in range(4)]
    q = normed(1, DIM)
    for a in answers:
        idx.search(q, 10, a)
    kept = idx._subsets._kept
    assert len(kept) == 2 and [e.allowed for e in kept.values()] == answers[2:]
    assert sum(e.nbytes for e in kept.values()) <= subset.budget(idx.size, DIM)


def test_an_answer_larger_than_the_budget_keeps_only_its_positions(
    index: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx, x, vids = index
    monkeypatch.setattr(subset, "FLOOR", 10_000)
    monkeypatch.setattr(subset, "CAP", 10_000)
    allowed = frozen(vids[vids % 2 == 0])  # 1,500 x 16 floats: 96,000 bytes
    q = normed(3, DIM, seed=4)
    got = idx.search(q, 10, allowed)
    (entry,) = idx._subsets._kept.values()
    assert entry.vectors is None
    assert_exact_top(got.vids, x, vids, q, 10, vids % 2 == 0)


def test_store_filter_sees_each_write_between_two_searches(tmp_path) -> None:
    """Through the store: the same filter, searched before and after a delete and an
    ingest, never returns the deleted record and finds the new one."""
    x = normed(2_000, DIM, seed=5)
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(2_000)],
            "label": [str(i % 10) for i in range(2_000)],
            "e": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM),
        }
    )
    spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("v", encoders=spec)
        col.ingest(table)
        q = x[3]
        first = col.search(vector=q, k=5, where={"label": "3"})
        assert first.ids[0] == "r3"
        col.delete(["r3"])
        after = col.search(vector=q, k=5, where={"label": "3"})
        assert "r3" not in after.ids and after.ids[0] == first.ids[1]
        col.ingest([{"id": "new", "label": "3", "e": q.tolist()}])
        assert col.search(vector=q, k=5, where={"label": "3"}).ids[0] == "new"
        assert col.search(vector=q, k=5, where={"label": "4"}).ids[0] != "new"
