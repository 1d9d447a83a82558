"""Readers in parallel, and a writer's publication alone: the lock between the catalog's one
writer and its readers in this process.

A writer holds the gate only from just before its DuckDB commit until the in-memory state
(indexes, hit cache, filter caches) agrees with that commit; its transaction, its checks
and its segment writes run while readers go on. A reader holds the gate in shared mode for
one read, so that what it reads in memory and what it reads from the catalog (through its
own DuckDB cursor, :meth:`mmstore.storage.catalog.Catalog.reading`) belong to the same
commit. The writer is preferred: once it waits, no new reader enters, so a stream of
reads cannot hold a commit back. Both sides are reentrant for their own thread, and the
thread that holds the gate exclusively may also read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Gate:
    """A writer-preferring readers-writer lock; see the module docstring."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # the thread that holds the gate exclusively
        self._writer_depth = 0
        self._waiting = 0  # writers waiting for the readers to leave
        self._mine = threading.local()  # this thread's depth of shared holds

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the gate for a read (at once when this thread already holds it)."""
        depth = getattr(self._mine, "depth", 0)
        if depth or self._writer == threading.get_ident():
            self._mine.depth = depth + 1
            try:
                yield
            finally:
                self._mine.depth = depth
            return
        with self._cond:
            while self._writer is not None or self._waiting:
                self._cond.wait()
            self._readers += 1
        self._mine.depth = 1
        try:
            yield
        finally:
            self._mine.depth = 0
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    def acquire(self) -> None:
        """Hold the gate alone, once the readers in flight have left (reentrant). A thread
        that holds it shared cannot also take it alone: that would wait for itself."""
        me = threading.get_ident()
        if self._writer == me:
            self._writer_depth += 1
            return
        if getattr(self._mine, "depth", 0):
            raise RuntimeError("a reader cannot publish a write while it reads")
        with self._cond:
            self._waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer, self._writer_depth = me, 1

    def release(self) -> None:
        """Let go of one exclusive hold; the last one lets the readers in."""
        if self._writer != threading.get_ident():
            raise RuntimeError("the gate is not held by this thread")
        self._writer_depth -= 1
        if self._writer_depth:
            return
        with self._cond:
            self._writer = None
            self._cond.notify_all()

    @property
    def held(self) -> bool:
        """Whether this thread holds the gate alone."""
        return self._writer == threading.get_ident()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


class WriterLock:
    """The catalog's one writer in this process, reentrant (a ``threading.RLock`` that knows
    its owner). A write takes the gate just before its commit
    (:meth:`mmstore.storage.catalog.Catalog.transaction`); the outermost release of this
    lock lets the gate go, once the writer has brought the in-memory state in line."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True) -> bool:
        if not self._lock.acquire(blocking):
            return False
        self._owner, self._depth = threading.get_ident(), self._depth + 1
        return True

    def release(self) -> None:
        self._depth -= 1
        try:
            if not self._depth:
                self._owner = None
                if self.gate.held:
                    self.gate.release()
        finally:
            self._lock.release()

    @property
    def mine(self) -> bool:
        """Whether this thread holds the lock."""
        return self._owner == threading.get_ident()

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
