"""R6: while one process holds a store for writing, a second writer gets a typed
``StoreLockedError`` naming the holder within a second, 10 of 10 times, and the store is
unchanged; read-only opens from several processes at once work when no writer holds it.

The holder ingests a batch, keeps the store open and waits; each contender is a separate
process (forked from a forkserver that imported mmstore) that times its own ``open``.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import mmstore
from tests.reliability.figures import record

VEC = {"e": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
TRIES = 10


def hold(path: str, ready: Connection, release: Connection) -> None:
    with mmstore.open(path) as store:
        store.collection("c").ingest([{"id": "held", "e": [1, 0, 0, 0]}])
        ready.send("ready")
        release.recv()


def contend(path: str, out: Connection) -> None:
    start = time.perf_counter()
    try:
        mmstore.open(path).close()
        out.send(("opened", time.perf_counter() - start, ""))
    except mmstore.StoreLockedError as e:
        out.send(("locked", time.perf_counter() - start, e.holder))
    except Exception as e:  # reported, so the parent can fail with it
        out.send((type(e).__name__, time.perf_counter() - start, str(e)))


def read(path: str, out: Connection) -> None:
    with mmstore.open(path, read_only=True) as store:
        out.send(store.collection("c").get(["a"])[0]["id"])
        time.sleep(0.5)  # still open while the other readers open


def run(ctx: ForkServerContext, target: Any, *args: Any) -> Any:
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=target, args=(*args, send))
    child.start()
    send.close()
    answer = receive.recv() if receive.poll(60) else None
    child.join(timeout=60)
    return answer


def readers_at_once(ctx: ForkServerContext, path: Path, n: int) -> list[Any]:
    """``n`` read-only processes started together, each open while the others open."""
    pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
    children = [ctx.Process(target=read, args=(str(path), w)) for _, w in pipes]
    for c in children:
        c.start()
    answers = [r.recv() if r.poll(60) else None for r, _ in pipes]
    for c in children:
        c.join(timeout=60)
    return answers


def test_second_writer_is_refused_ten_of_ten(forkserver: ForkServerContext, tmp_path: Path) -> None:
    ctx = forkserver
    path = tmp_path / "s"
    with mmstore.open(path) as store:
        store.create_collection("c", encoders=VEC).ingest([{"id": "a", "e": [0, 1, 0, 0]}])
    ready_r, ready_w = ctx.Pipe(duplex=False)
    release_r, release_w = ctx.Pipe(duplex=False)
    holder = ctx.Process(target=hold, args=(str(path), ready_w, release_r))
    holder.start()
    try:
        assert ready_r.poll(60) and ready_r.recv() == "ready"
        answers = [run(ctx, contend, str(path)) for _ in range(TRIES)]
    finally:
        release_w.send("go")
        holder.join(timeout=60)
    assert holder.exitcode == 0
    assert [a[0] for a in answers] == ["locked"] * TRIES, answers
    assert all(f"PID {holder.pid}" in a[2] for a in answers)
    slowest = max(a[1] for a in answers)
    assert slowest < 1.0
    with mmstore.open(path) as store:  # unchanged: what the holder committed, nothing else
        col = store.collection("c")
        assert sorted(r["id"] for r in col.get(["a", "held"])) == ["a", "held"]
        assert len(col) == 2 and all(f["ok"] for f in col.verify())
    assert readers_at_once(ctx, path, 3) == ["a"] * 3
    record(
        "R6",
        "test_second_writer_is_refused_ten_of_ten",
        f"{TRIES} of {TRIES} second writers refused with StoreLockedError naming the holder's "
        f"PID, slowest in {slowest * 1000:.0f} ms; store unchanged; 3 of 3 read-only processes "
        "open at once after the writer closed",
    )
