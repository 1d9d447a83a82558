"""A DuckDB connection of its own for each reading thread: a cursor of the writer's
database, so that reads see the last commit (MVCC) and run while the writer's transaction
is open, instead of waiting for it behind one connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import duckdb_engine
import sqlalchemy as sa
from sqlalchemy.engine import Connection


class ReadConnections:
    """One SQLAlchemy connection per thread, each on its own DuckDB cursor; those of
    threads that have ended are closed when a new thread asks."""

    def __init__(self, cursor: Callable[[], Any], setup: Callable[[Any], None]) -> None:
        def connect() -> Any:
            raw = cursor()
            setup(raw)
            return duckdb_engine.ConnectionWrapper(raw)

        self._engine = sa.create_engine("duckdb://", creator=connect, poolclass=sa.pool.NullPool)
        self._by_thread: dict[threading.Thread, Connection] = {}
        self._lock = threading.Lock()
        self._closed = False

    def mine(self) -> Connection:
        """This thread's connection, opened at its first read."""
        me = threading.current_thread()
        conn = self._by_thread.get(me)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise RuntimeError("the catalog is closed")
            for thread in [t for t in self._by_thread if not t.is_alive()]:
                self._by_thread.pop(thread).close()
            conn = self._by_thread[me] = self._engine.connect()
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._by_thread.values():
                conn.close()
            self._by_thread.clear()
        self._engine.dispose()
