"""The hit cache (:mod:`mmstore.index.hitcache`) loads a collection's vids and record rows
as columns on the first search and follows each committed write through its overlays: after
every kind of write, a warm cache answers exactly what a reload from the catalog answers.

Bad inputs tried: an upsert that keeps a record's vector but changes its label, time and
metadata (the vid stays, its row moves), a delete and the re-insert of the same id, a
delete of a vector added after the load, and a vector whose record the cache never saw
(the cache reloads instead of naming a wrong record)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

import mmstore
from mmstore.index.hitcache import HitCache

DIM = 8
SPEC = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def record(i: int, label: str = "a", **extra: Any) -> dict[str, Any]:
    return {"id": f"r{i}", "e": unit(i), "label": label, "meta": {"i": i}} | extra


def seen(col: Any) -> list[list[tuple[Any, ...]]]:
    """Every hit field of a search for each stored vector's neighbours."""
    out = []
    for i in range(12):
        hits = col.search(vector=unit(i), k=5)
        out.append([(h.id, round(h.score, 5), h.label, h.ts, h.meta, h.values) for h in hits])
    return out


def reloaded(col: Any) -> list[list[tuple[Any, ...]]]:
    col.cache.invalidate()
    return seen(col)


def test_a_warm_cache_answers_what_a_reload_answers_after_each_write(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as s:
        col = s.create_collection("v", SPEC)
        col.ingest([record(i) for i in range(8)])
        seen(col)
        assert col.cache.loaded
        stamp = dt.datetime(2026, 1, 2, 3, 4, 5)
        writes = [
            lambda: col.ingest([record(3, "b", ts=stamp, meta={"moved": True})]),  # same vid
            lambda: col.ingest([record(i) for i in range(8, 12)]),  # new records
            lambda: col.delete(["r5"]),
            lambda: col.ingest([record(5, "c")]),  # the same id again
            lambda: col.delete(["r9"]),  # a vector added after the load
            lambda: col.ingest([record(2, "d") | {"e": unit(99)}]),  # a new vector
        ]
        for write in writes:
            write()
            warm = seen(col)
            assert warm == reloaded(col)
        by_id = {h[0]: h for row in warm for h in row}
        assert by_id["r3"][2:5] == ("b", stamp, {"moved": True})
        assert by_id["r5"][2] == "c" and "r9" not in by_id


def test_a_vector_of_an_unknown_record_reloads_the_cache(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as s:
        col = s.create_collection("v", SPEC)
        col.ingest([record(i) for i in range(4)])
        cache: HitCache = col.cache
        cache.ensure()
        generation = cache.generation
        cache.apply({}, [(10_000, "nobody")], [], [])
        assert not cache.loaded and cache.generation > generation
        assert seen(col) == reloaded(col)


def test_records_of_interleaved_collections_are_told_apart(tmp_path: Path) -> None:
    """Two collections written in turn: each one's records are not one run of catalog rows,
    and every hit still names its own record and label."""
    with mmstore.open(tmp_path / "s") as s:
        cols = [s.create_collection(name, SPEC) for name in ("x", "y")]
        for i in range(10):
            for col in cols:
                col.ingest([record(i, label=f"{col.name}{i}") | {"id": f"{col.name}{i}"}])
        s.collection("x").delete(["x4"])
        for col in cols:
            col.cache.invalidate()
            for i in range(10):
                hits = col.search(vector=unit(i), k=1)
                if col.name == "x" and i == 4:
                    assert hits[0].id != "x4"
                    continue
                assert (hits[0].id, hits[0].label) == (f"{col.name}{i}", f"{col.name}{i}")
