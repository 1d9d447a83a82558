"""R5: reader threads that search, get and count while a writer thread ingests, updates and
deletes in the same process see no torn state and raise nothing unexpected.

Every write changes whole groups: group ``g`` is 8 records written in one ingest call
with the same version ``v`` in their metadata and vectors that encode ``(g, v)``; a
delete removes a whole group in one call. A torn read is a group seen with mixed versions
or in part (some of its records and not others), a hit whose stored version disagrees with
its vector, or a search hit that ``get`` cannot find at once in the same reader.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import mmstore
from tests.reliability.figures import record

DIM = 8
GROUP = 8
GROUPS = 12
VEC = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}


def vector(g: int, v: int, i: int) -> list[float]:
    out = np.zeros(DIM, np.float32)
    out[g % DIM] = 1.0
    out[(g + 1 + i) % DIM] += 0.01 * (i + 1)
    out[(g + 3) % DIM] += 0.001 * (v % 50 + 1)
    return out.tolist()


def group(g: int, v: int) -> list[dict[str, Any]]:
    return [
        {"id": f"g{g}-{i}", "e": vector(g, v, i), "meta": {"g": g, "v": v}} for i in range(GROUP)
    ]


def writer(col: mmstore.Collection, stop: threading.Event, counts: dict[str, int]) -> None:
    rng = random.Random(1)
    version = 1
    while not stop.is_set():
        g = rng.randrange(GROUPS)
        if rng.random() < 0.25:
            col.delete([f"g{g}-{i}" for i in range(GROUP)])
            counts["deletes"] += 1
        else:
            version += 1
            col.ingest(group(g, version))
            counts["writes"] += 1


def reader(
    col: mmstore.Collection, stop: threading.Event, counts: dict[str, int], errors: list[str]
) -> None:
    rng = random.Random(threading.get_ident())
    while not stop.is_set():
        g = rng.randrange(GROUPS)
        try:
            check_group(col, g)
            hits = col.search(vector=vector(g, 0, 0), k=GROUP, where={"g": g})
            if hits.ids:
                got = col.get(hits.ids)
                versions = {r["meta"]["v"] for r in got}
                if len(versions) > 1 or len(got) != GROUP:
                    errors.append(f"search of group {g} torn: {sorted(versions)}, {len(got)}")
            counts["reads"] += 1
        except mmstore.NotFoundError:
            counts["raced_deletes"] += 1  # deleted between search and get: allowed
        except Exception as e:  # anything else is a failure
            errors.append(f"{type(e).__name__}: {e}")


def check_group(col: mmstore.Collection, g: int) -> None:
    n = col.count({"g": g})
    if n not in (0, GROUP):
        raise AssertionError(f"group {g} half there: {n} records")


def test_readers_during_writes_see_no_torn_state(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=VEC, index={"ann_threshold": 40})
        for g in range(GROUPS):
            col.ingest(group(g, 1))
        stop = threading.Event()
        counts = {"writes": 0, "deletes": 0, "reads": 0, "raced_deletes": 0}
        errors: list[str] = []
        threads = [threading.Thread(target=writer, args=(col, stop, counts))]
        threads += [
            threading.Thread(target=reader, args=(col, stop, counts, errors)) for _ in range(4)
        ]
        for t in threads:
            t.start()
        time.sleep(8)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert errors == [], errors[:5]
        assert counts["writes"] > 20 and counts["reads"] > 100, counts
        assert all(f["ok"] for f in col.verify())
    record(
        "R5",
        "test_readers_during_writes_see_no_torn_state",
        f"4 reader threads, 1 writer, 8 s: {counts['reads']} checked reads (count, filtered "
        f"search, get) during {counts['writes']} group writes and {counts['deletes']} group "
        f"deletes: 0 torn reads, 0 unexpected errors ({counts['raced_deletes']} reads saw a "
        "group deleted between search and get, which is allowed); verify ok after",
    )


def slow_records(opened: threading.Event, n: int, pause: float) -> Any:
    """The records of groups 100 and up, in chunks of one group, ``pause`` s apart: an
    ingest of them keeps its transaction open for ``n * pause`` s."""
    for g in range(100, 100 + n):
        opened.set()
        yield from group(g, 1)
        time.sleep(pause)


def check_in_flight(
    done: list[tuple[float, int]], began: float, ended: float, least: int
) -> list[int]:
    """Of reads ``(finished at, records of the slow write seen)``: at least ``least``
    finished inside the write's span and saw none of it, and those after it saw it all;
    the reads inside the span."""
    during = [seen for when, seen in done if began + 0.2 < when < ended - 0.05]
    after = [seen for when, seen in done if when > ended + 0.1]
    assert len(during) >= least, f"{len(during)} reads finished while the write was in flight"
    assert set(during) == {0}, "a read saw records of a write not yet committed"
    assert after and set(after) == {10 * GROUP}
    return during


def test_reads_go_on_while_a_write_is_in_flight(tmp_path: Path) -> None:
    """Searches, gets and counts in 4 threads finish while one ingest's transaction is open
    (timestamps inside the write's span), and none of them sees a record of it before it
    returns; afterwards every reader sees all of it."""
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=VEC, index={"ann_threshold": 40})
        for g in range(GROUPS):
            col.ingest(group(g, 1))
        opened, stop, errors = threading.Event(), threading.Event(), []
        done: list[tuple[float, int]] = []  # (when a read finished, in-flight records it saw)

        def read() -> None:
            while not stop.is_set():
                try:
                    hits = col.search(vector=vector(3, 0, 0), k=GROUP, where={"g": 3})
                    assert len(col.get(hits.ids)) == GROUP
                    seen = col.count({"g": {"$gte": 100}})
                    done.append((time.monotonic(), seen))
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        began = time.monotonic()
        col.ingest(slow_records(opened, 10, 0.2), chunk_size=GROUP)
        ended = time.monotonic()
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == [], errors[:5]
    during = check_in_flight(done, began, ended, least=20)
    record(
        "R5",
        "test_reads_go_on_while_a_write_is_in_flight",
        f"4 reader threads during one 2 s ingest transaction: {len(during)} searches, gets "
        "and counts finished inside its span, none saw its records before the commit, all "
        "after it",
    )


def test_searches_during_a_reembedding_switch_are_never_torn(tmp_path: Path) -> None:
    """4 reader threads search by text while the field is re-embedded into a new space
    (other seed: every vector changes) and switched: each search is encoded and answered
    in one space, so a record's own text finds it at a score of 1 before, during and after
    the switch; a torn read (query in one space, index in the other) would score ~0."""
    from mmstore.testing import FakePlugin

    n = 1500
    texts = [f"alpha{i} beta{i * 7} gamma{i * 13} delta{i % 97}" for i in range(n)]
    with mmstore.open(tmp_path / "s", plugins=[FakePlugin()]) as store:
        spec = {"text": {"encoder": "hash_text", "dim": 256, "seed": 0}}
        col = store.create_collection("c", encoders=spec)
        col.ingest([{"id": f"r{i}", "text": t} for i, t in enumerate(texts)])
        stop, errors, scores = threading.Event(), [], []

        def read(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                try:
                    hits = col.search(text=texts[rng.randrange(n)], k=1)
                    scores.append((time.monotonic(), hits[0].score))
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        began = time.monotonic()
        report = col.reembed("text", encoder={**spec["text"], "seed": 1}, batch_size=50)
        ended = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert all(f["ok"] for f in col.verify())
    low = [s for _, s in scores if s < 0.999]
    during = [s for when, s in scores if began < when < ended]
    assert report.switched and errors == [], errors[:5]
    assert low == [], f"{len(low)} of {len(scores)} searches torn, e.g. scores {low[:5]}"
    assert len(during) >= 20, f"{len(during)} searches finished during the re-embedding"
    record(
        "R5",
        "test_searches_during_a_reembedding_switch_are_never_torn",
        f"4 reader threads searching by text while {n} records were re-embedded into a new "
        f"space and switched ({ended - began:.1f} s, batches of 50): {len(scores)} searches, "
        f"{len(during)} during it, each answered in one space (own text at score 1), 0 torn, "
        "0 errors",
    )


def test_searches_go_on_while_optimize_extends_the_graph(tmp_path: Path) -> None:
    """4 reader threads search while ``optimize`` adds a 12,000-vector tail to an HNSW
    graph: the graph is extended on a copy, so searches finish all through the optimize
    (no gap of 0.5 s between them; in place, searches waited 1.0 s), each finding its own
    record first, before and after the swap."""
    dim, base, tail = 32, 12_000, 12_000  # within RETRAIN_GROWTH: the graph is extended
    rng = np.random.default_rng(5)
    x = rng.normal(size=(base + tail, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": dim}}
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("c", encoders=spec, index={"ann_threshold": 1000})
        col.ingest([{"id": f"r{i}", "e": x[i]} for i in range(base)])
        col.optimize()  # the first build, in place
        col.ingest([{"id": f"r{i}", "e": x[i]} for i in range(base, base + tail)])
        stop, errors, done = threading.Event(), [], []

        def read(seed: int) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                i = r.randrange(base + tail)
                hits = col.search(vector=x[i], k=1)
                if hits.ids != [f"r{i}"]:
                    errors.append(f"r{i} found {hits.ids}")
                done.append(time.monotonic())

        threads = [threading.Thread(target=read, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        began = time.monotonic()
        col.optimize()
        ended = time.monotonic()
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        index = col.info()["fields"][0]["index"]
        assert all(f["ok"] for f in col.verify())
    during = sorted(when for when in done if began < when < ended)
    gap = float(np.diff([began, *during, ended]).max())  # the longest wait for a search
    assert errors == [], errors[:5]
    assert index["kind"] == "hnsw" and index["size"] == base + tail
    assert len(during) >= 20, f"{len(during)} searches in a {ended - began:.1f} s optimize"
    assert gap < 0.5, f"no search finished for {gap:.2f} s of a {ended - began:.1f} s optimize"
    record(
        "R5",
        "test_searches_go_on_while_optimize_extends_the_graph",
        f"4 reader threads while optimize added {tail:,} vectors to an HNSW graph of "
        f"{base:,} ({ended - began:.1f} s, on a copy): {len(during)} searches finished "
        f"inside it, at most {gap * 1000:.0f} ms apart; every search found its own record "
        "first, before and after the swap",
    )
