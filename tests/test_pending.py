"""What an ingest call holds for its indexes until it commits: vectors copied into slabs
and drained into one array, equal to the chunks joined, across every slab edge."""

from __future__ import annotations

import numpy as np
import pytest

from mmstore.ingest import pending
from mmstore.ingest.pending import Pending, Slabs


@pytest.mark.parametrize("sizes", [[1], [7, 7], [3, 10, 1, 25], [0, 14, 0], [8] * 5])
def test_slabs_drain_to_the_chunks_joined(monkeypatch: pytest.MonkeyPatch, sizes: list[int]):
    monkeypatch.setattr(pending, "SLAB_BYTES", 7 * 4 * 3)  # 7 rows of 3 floats a slab
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((n, 3)).astype(np.float32) for n in sizes]
    slabs = Slabs(3)
    for chunk in chunks:
        slabs.put(chunk[:])  # views, so that each is copied however large
    assert slabs.rows == 7 and len(slabs.slabs) == -(-sum(sizes) // 7)
    assert all(slab.base is None for slab in slabs.slabs)  # copies, not the chunks
    out = slabs.drain()
    assert np.array_equal(out, np.concatenate(chunks))
    assert out.flags.c_contiguous and out.dtype == np.float32
    assert slabs.slabs == [] and slabs.n == 0


def test_pending_change_joins_vids_and_vectors_per_field():
    held = Pending()
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    held.hold("e", np.array([1, 2]), a[:2])
    held.hold("e", np.array([5, 6]), a[2:])
    held.hold("f", np.array([9]), a[:1])

    class F:
        def __init__(self, name: str) -> None:
            self.name = name

    change = held.change({"e": F("e"), "f": F("f")})  # type: ignore[dict-item]
    got = {f.name: (vids.tolist(), vectors) for f, vids, vectors in change.added}
    assert got["e"][0] == [1, 2, 5, 6] and np.array_equal(got["e"][1], a)
    assert got["f"][0] == [9] and np.array_equal(got["f"][1], a[:1])
    assert held.added == {}


def test_past_the_limit_nothing_is_held_and_the_index_reloads():
    held = Pending(limit=100)
    held.hold("e", np.array([1]), np.zeros((1, 16), np.float32))
    held.hold("e", np.array([2]), np.zeros((1, 16), np.float32))
    assert held.overflow and held.added == {}


def test_a_chunk_as_large_as_a_slab_is_kept_without_a_copy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pending, "SLAB_BYTES", 7 * 4 * 3)
    rng = np.random.default_rng(1)
    small, large, view = (rng.standard_normal((n, 3)).astype(np.float32) for n in (3, 9, 20))
    slabs = Slabs(3)
    for chunk in (small, large, view[5:15], small):  # a view is copied: it owns nothing
        slabs.put(chunk)
    assert slabs.slabs[1] is large and slabs.filled == [3, 9, 7, 6]
    assert np.array_equal(slabs.drain(), np.concatenate([small, large, view[5:15], small]))
