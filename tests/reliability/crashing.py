"""The child side of the crash tests: a process that ingests batches through the real API
and acknowledges each one only after ``ingest`` returned, until it is killed, by the parent
at a random moment or by itself at a named phase (a trap installed before it starts).

Batch ``b`` adds records ``r{b}-0..`` and updates ``r{b-1}-0..`` (``meta.batch = b``, a
new text), so a half-applied batch would show as new records without their updates or the
reverse. Every few batches the child saves its indexes (``optimize``) and checkpoints the
DuckDB log, so that kills land there too.

Children are forked from a forkserver that has imported mmstore once (fast starts, and no
threads of the test process inherited)."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import mmstore
from mmstore.testing import FakePlugin, HashTextEncoder

BATCH = 12  # new records per batch
UPDATES = 3  # records of the previous batch updated by each batch
FIELDS = {"text": {"encoder": "hash_text", "dim": 128}}
PHASES = ("random", "encode", "commit", "index_save", "checkpoint")


def text(rid: str, batch: int) -> str:
    return f"record {rid} written by batch {batch}"


def batch_records(b: int) -> list[dict[str, Any]]:
    new = [
        {"id": f"r{b}-{j}", "text": text(f"r{b}-{j}", b), "meta": {"batch": b}}
        for j in range(BATCH)
    ]
    if b == 0:
        return new
    updated = [
        {"id": f"r{b - 1}-{j}", "text": text(f"r{b - 1}-{j}", b), "meta": {"batch": b}}
        for j in range(UPDATES)
    ]
    return new + updated


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_soon(rng: random.Random, most_ms: float) -> None:
    """SIGKILL this process from a timer thread within ``most_ms``: lands inside the work
    that the caller starts next."""
    timer = threading.Timer(rng.uniform(0, most_ms) / 1000, die)
    timer.daemon = True
    timer.start()


def install_trap(phase: str, after: int, rng: random.Random) -> None:
    """Kill this process at the ``after``-th occurrence of ``phase``."""
    count = {"n": 0}

    def due() -> bool:
        count["n"] += 1
        return count["n"] >= after

    if phase == "encode":
        _wrap(HashTextEncoder, "encode", lambda: due() and die())
    elif phase == "commit":
        from sqlalchemy.engine.base import Connection as SAConnection

        _wrap(SAConnection, "_commit_impl", lambda: due() and die_soon(rng, 3))
    elif phase == "index_save":
        _trap_index_save(due, rng)
    elif phase == "checkpoint":
        import tests.reliability.crashing as me

        _wrap(me, "checkpoint", lambda: due() and die_soon(rng, 5))


def _wrap(owner: Any, name: str, before: Callable[[], Any]) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before()
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def _trap_index_save(due: Callable[[], bool], rng: random.Random) -> None:
    """Die while the index file is being written (its temporary file half written), just
    after it was renamed into place (its manifest row not yet committed), or in between."""
    from mmstore.index import collection as indexes

    original = indexes.write_atomic

    def write(path: Any, chunks: Any) -> str:
        if not due():
            return original(path, chunks)
        where = rng.choice(("half-written", "renamed", "timer"))
        if where == "half-written":

            def half() -> Any:
                for i, chunk in enumerate(chunks):
                    if i == 1:
                        die()
                    yield chunk

            return original(path, half())
        if where == "renamed":
            original(path, chunks)
            die()
        die_soon(rng, 5)
        return original(path, chunks)

    indexes.write_atomic = write  # type: ignore[assignment]


def checkpoint(store: mmstore.Store) -> None:
    """Fold the DuckDB log into the database file (what close does)."""
    with store.catalog.reading() as conn:
        conn.exec_driver_sql("CHECKPOINT")


def worker(path: str, first: int, phase: str, after: int, seed: int, acks: Connection) -> None:
    """Ingest batches ``first, first + 1, ...`` forever, acknowledging each after it returned."""
    rng = random.Random(seed)
    install_trap(phase, after, rng)
    store = mmstore.open(path, plugins=[FakePlugin()])
    col = store.collection("crash")
    b = first
    while True:
        col.ingest(batch_records(b))
        acks.send(b)
        b += 1
        if b % 4 == 0:
            col.optimize()  # saves the indexes
        if b % 6 == 0:
            checkpoint(store)
