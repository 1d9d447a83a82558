"""The catalog connection: one DuckDB database reached through SQLAlchemy, the single-writer
lock turned into a typed error, transactions, counters and bulk Arrow transfers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mmstore import schema
from mmstore.errors import ReadOnlyError, StoreLockedError

CHECKPOINT_THRESHOLD = "512MB"
_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<holder>.+?\(PID \d+\))", re.S)


class Catalog:
    """A DuckDB database file opened once, for writing or read-only."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path, self.read_only = path, read_only
        self.engine = sa.create_engine(
            f"duckdb:///{path}",
            poolclass=sa.pool.StaticPool,
            connect_args={"read_only": read_only},
        )
        try:
            self.conn: Connection = self.engine.connect()
        except sa.exc.DBAPIError as e:
            self.engine.dispose()
            match = _LOCK_RE.search(str(e.orig))
            if match:
                raise StoreLockedError(str(path.parent), match["holder"].strip()) from e
            raise
        self.lock = threading.RLock()
        self._savepoint_depth = 0

    @property
    def raw(self) -> Any:
        """The DuckDB connection under SQLAlchemy (for Arrow registration)."""
        return self.conn.connection.driver_connection

    def lock_down(self) -> None:
        """Switch off DuckDB's access to files and the network, and lock its settings.

        The checkpoint threshold is raised so that a bulk ingest commits by appending to
        the write-ahead log instead of rewriting the database file on the spot; DuckDB
        checkpoints on close, and replays a longer log after a crash.
        """
        self.conn.exec_driver_sql(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        self.conn.exec_driver_sql("SET enable_external_access = false")
        self.conn.exec_driver_sql("SET lock_configuration = true")
        self.conn.commit()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction: everything inside commits together or not at all."""
        if self.read_only:
            raise ReadOnlyError(f"store {str(self.path.parent)!r} is open read-only")
        with self.lock:
            if self.conn.in_transaction():
                yield self.conn
                return
            with self.conn.begin():
                yield self.conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection to read from, serialized with writes in this process; a read outside
        a write transaction ends its implicit transaction afterwards."""
        with self.lock:
            outer = self.conn.in_transaction()
            try:
                yield self.conn
            finally:
                if not outer and self.conn.in_transaction():
                    self.conn.rollback()

    def next_ids(self, conn: Connection, name: str, n: int) -> int:
        """Reserve ``n`` ids of counter ``name`` (never reused); return the first."""
        table = schema.counters
        row = conn.execute(
            sa.select(table.c.value).where(table.c.name == name)
        ).scalar_one_or_none()
        start = (row or 0) + 1
        if row is None:
            conn.execute(table.insert().values(name=name, value=start + n - 1))
        else:
            conn.execute(table.update().where(table.c.name == name).values(value=start + n - 1))
        return start

    @contextmanager
    def arrow(self, name: str, table: pa.Table) -> Iterator[str]:
        """Expose an Arrow table to SQL under ``name`` for the block (no row-by-row copy)."""
        self.raw.register(name, table)
        try:
            yield name
        finally:
            self.raw.unregister(name)

    def query_arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run SQL and fetch the result as one Arrow table."""
        with self.lock:
            return self.raw.sql(sql, params=params or None).to_arrow_table()

    def select_arrow(self, stmt: sa.Select[Any]) -> pa.Table:
        """Run a SQLAlchemy select (bound parameters kept bound) and fetch it as Arrow."""
        compiled = stmt.compile(
            dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = [compiled.params[name] for name in compiled.positiontup or ()]
        return self.query_arrow(str(compiled), params)

    def close(self) -> None:
        with self.lock:
            self.conn.close()
            self.engine.dispose()
