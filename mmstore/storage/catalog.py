"""The catalog connection: one DuckDB database reached through SQLAlchemy, optionally
encrypted at rest, the single-writer lock turned into a typed error, transactions, counters
and bulk Arrow transfers."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mmstore.errors import (
    ConfigError,
    DamagedLogError,
    EncryptionKeyError,
    EncryptionUnavailableError,
    ReadOnlyError,
    StoreLockedError,
)
from mmstore.storage import failures as storage
from mmstore.storage import schema, wal
from mmstore.storage.gate import Gate, WriterLock
from mmstore.storage.readers import ReadConnections
from mmstore.storage.segments import SegmentFiles
from mmstore.storage.wal import DamagedLog, is_damaged_log, set_aside

log = logging.getLogger(__name__)
OnDamagedLog = Literal["refuse", "read_only"]
CHECKPOINT_THRESHOLD = "512MB"
ENCRYPTION_KEY_ENV = "MMSTORE_ENCRYPTION_KEY"
ENCRYPTED_ALIAS = "mms_catalog"  # the name an encrypted database file is attached under
_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<holder>.+?\(PID \d+\))", re.S)
_KEY_PROBLEMS = {  # DuckDB's messages -> EncryptionKeyError.problem
    "Cannot open encrypted database": "missing",
    "Wrong encryption key": "wrong",
    "A key is explicitly specified, but database": "unexpected",
}
#: no extra of mmstore names the package: none of its releases is built for DuckDB 2 yet, and an
#: extra that cannot resolve breaks the install of everything it is listed with
_INSTALL = "pip install duckdb-extension-httpfs==<the DuckDB version>, once it is published"


def resolve_key(given: str | None) -> str | None:
    """The encryption key to open a catalog with: ``given`` wins; when it is None, the
    environment variable MMSTORE_ENCRYPTION_KEY (unset or empty: no encryption)."""
    if given is None:
        return os.environ.get(ENCRYPTION_KEY_ENV) or None
    if not isinstance(given, str) or not given:
        raise ConfigError("encryption_key must be a non-empty string (or None: no encryption)")
    return given


def crypto_extension() -> Path:
    """The httpfs extension file built for the running DuckDB, as the package
    ``duckdb-extension-httpfs`` installs it (``extensions/v<version>/``); nothing is
    downloaded. DuckDB's built-in crypto only reads encrypted files: writing them takes the
    OpenSSL that httpfs carries."""
    try:
        import duckdb_extension_httpfs
    except ImportError:
        raise EncryptionUnavailableError(
            "an encrypted store needs DuckDB's httpfs extension, which is not installed: "
            f"{_INSTALL} (the package duckdb-extension-httpfs {duckdb.__version__})"
        ) from None
    folder = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    path = folder / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    if not path.is_file():
        built = ", ".join(sorted(p.name for p in folder.glob("v*"))) or "none"
        raise EncryptionUnavailableError(
            f"the installed duckdb-extension-httpfs is built for DuckDB {built}, but DuckDB "
            f"v{duckdb.__version__} runs here: install duckdb-extension-httpfs=="
            f"{duckdb.__version__} ({_INSTALL})"
        )
    return path


def load_crypto(raw: Any) -> None:
    """Load the httpfs extension from its installed file into the DuckDB connection ``raw``,
    so that DuckDB encrypts with OpenSSL (before the catalog is locked down)."""
    path = str(crypto_extension()).replace("'", "''")
    raw.execute(f"LOAD '{path}'")


class Catalog:
    """A DuckDB database file opened once, for writing or read-only; encrypted (AES-GCM)
    when opened with a key, which is passed to DuckDB and kept nowhere else."""

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        encryption_key: str | None = None,
        on_damaged_log: OnDamagedLog = "refuse",
    ) -> None:
        self.path, self.read_only = path, read_only
        key = resolve_key(encryption_key)
        self.encrypted = key is not None
        #: where vectors live: segment files beside the catalog, or (encrypted) BLOBs in it
        self.segments = (
            None if self.encrypted else SegmentFiles(path.parent / "vectors", str(path.parent))
        )
        #: the write-ahead log set aside by this open because it could not be replayed
        self.damaged_log: DamagedLog | None = None
        #: readers in parallel, a writer's publication alone (:mod:`mmstore.storage.gate`)
        self.gate = Gate()
        self.lock = WriterLock(self.gate)
        self._readers: ReadConnections | None = None
        self._readers_made = threading.Lock()
        copy = None if read_only else self._preserve_log()
        try:
            self._connect(key)
        except sa.exc.DBAPIError as e:
            if not is_damaged_log(e):
                raise
            self._after_damaged_log(e, key, on_damaged_log)
        finally:
            if copy is not None and self.damaged_log is not None:
                copy.unlink(missing_ok=True)
        self._writing = False  # a write transaction is open on conn
        if self.damaged_log is None:
            self._check_replay(copy, on_damaged_log)

    def _preserve_log(self) -> Path | None:
        """A copy of the log before DuckDB replays it (only to report a partial replay):
        when the disk cannot hold it, go on without."""
        consequence = "a partial replay of the log could not be reported with its size"
        with storage.warn_instead(str(self.path.parent), "copying the log", consequence):
            return wal.preserve(self.path)
        return None

    def _connect(self, key: str | None) -> None:
        self.engine = sa.create_engine(
            "duckdb:///:memory:" if self.encrypted else f"duckdb:///{self.path}",
            poolclass=sa.pool.StaticPool,
            connect_args=self._connect_args(),
        )
        try:
            self.conn: Connection = self.engine.connect()
            if key is not None:
                self._attach_encrypted(key)
        except Exception as e:
            self.engine.dispose()
            typed = self._open_error(e)
            if typed is e:
                raise
            raise typed from e

    def _after_damaged_log(self, error: Exception, key: str | None, then: OnDamagedLog) -> None:
        """Set the log aside (never delete it), then refuse with what may be lost, or open
        read-only from the last checkpoint."""
        self.damaged_log = set_aside(self.path, error)
        wal.forget_mark(self.path)  # reported now; the next open starts a new count
        loss = self.damaged_log.loss()
        log.warning("store %s: %s", self.path.parent, loss)
        if then == "refuse":
            raise DamagedLogError(str(self.path.parent), loss) from error
        self.read_only = True
        self._connect(key)

    def _check_replay(self, copy: Path | None, then: OnDamagedLog) -> None:
        """Compare the commits the catalog holds with those that returned: fewer means the
        log was replayed only in part (silently, by DuckDB); report it like a damaged log."""
        marked = wal.read_mark(self.path)
        replayed = self._commits()
        if marked is None or replayed >= marked:
            if copy is not None:
                copy.unlink(missing_ok=True)
            return
        self.damaged_log = wal.replay_loss(self.path, copy, replayed, marked)
        if not self.read_only:
            wal.write_mark(self.path, replayed)  # reported now, not at every open
            self._settle_replay()
        loss = self.damaged_log.loss()
        log.warning("store %s: %s", self.path.parent, loss)
        if then == "refuse":
            self.close()
            raise DamagedLogError(str(self.path.parent), loss)
        self.read_only = True

    def _settle_replay(self) -> None:
        """Put what a partial replay restored into the file and end the log (its copy is
        kept), so that later commits are never appended after the damaged entry. The
        damaged log is counted first: DuckDB skips the checkpoint of a database with no
        change, which left the whole log in place when the damage stopped the replay
        before its first entry (R7 failed so about 1 run in 2)."""
        with self.transaction("recording a damaged log") as conn:
            self.next_ids(conn, wal.DAMAGED, 1)
        self.conn.exec_driver_sql("CHECKPOINT")

    def _commits(self) -> int:
        table = schema.counters
        query = sa.select(table.c.value).where(table.c.name == wal.COMMITS)
        try:
            with self.reading() as conn:
                return int(conn.execute(query).scalar_one_or_none() or 0)
        except sa.exc.DBAPIError:  # a catalog not yet migrated has no counters table
            return 0

    def _connect_args(self) -> dict[str, Any]:
        """How DuckDB is started: on the file itself, or (encrypted) in memory with the
        file attached after, never installing an extension from the network, and spilling
        encrypted temporary files beside the file (as it would for the file itself)."""
        if not self.encrypted:
            return {"read_only": self.read_only}
        config = {
            "autoinstall_known_extensions": False,
            "temp_directory": f"{self.path}.tmp",
            "temp_file_encryption": True,
        }
        return {"config": config}

    def _attach_encrypted(self, key: str) -> None:
        """Load the crypto extension, attach the database file with ``key`` (a bound
        parameter, never spliced into SQL) and make it the default database."""
        load_crypto(self.raw)
        options = "ENCRYPTION_KEY ?" + (", READ_ONLY" if self.read_only else "")
        self.raw.execute(f"ATTACH ? AS {ENCRYPTED_ALIAS} ({options})", [str(self.path), key])
        self.raw.execute(f"USE {ENCRYPTED_ALIAS}")

    def _open_error(self, e: Exception) -> Exception:
        """The typed error for a failed open (a lock held elsewhere, a key problem), or
        ``e`` itself."""
        message, store = str(getattr(e, "orig", e)), str(self.path.parent)
        match = _LOCK_RE.search(message)
        if match:
            return StoreLockedError(store, match["holder"].strip())
        for needle, problem in _KEY_PROBLEMS.items():
            if needle in message:
                return EncryptionKeyError(store, problem)
        return e

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
    def transaction(self, action: str = "a write", publish: bool = True) -> Iterator[Connection]:
        """One write transaction: everything inside commits together or not at all. A
        refused write (ours inside the block, or DuckDB's) raises
        :class:`~mmstore.errors.StorageError` naming ``action``. Readers are kept out from
        just before the commit until the writer lock is let go (:mod:`mmstore.storage.gate`),
        unless ``publish`` is False: a write that no in-memory state follows."""
        if self.read_only:
            raise ReadOnlyError(f"store {str(self.path.parent)!r} is open read-only")
        store = str(self.path.parent)
        with self.lock, storage.guard(store, action):
            if self._writing:  # inside an outer write: it commits
                yield self.conn
                return
            if self.conn.in_transaction():  # left open by a direct read of ``conn``: ended
                self.conn.commit()  # here, or this write would join it and never commit
            self._writing = True
            try:
                with self.conn.begin():
                    yield self.conn
                    number = self.next_ids(self.conn, wal.COMMITS, 1)
                    if publish and not self.gate.held:
                        self.gate.acquire()  # let go by the writer lock's outermost release
            finally:
                self._writing = False
        lost = "the next open checks less of the log's replay"
        with storage.warn_instead(store, "writing the commit mark", lost):
            wal.write_mark(self.path, number)  # after the commit returned

    @property
    def writing(self) -> bool:
        """Whether a write transaction is open (in the thread holding the writer lock)."""
        return self._writing

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection to read from: the writer's own (seeing its uncommitted writes) in the
        thread that holds the writer lock, else this thread's cursor, which sees the last
        commit and never waits for the writer. The reads of one block are one snapshot; a
        block that began a transaction ends it afterwards."""
        mine = self.lock.mine
        conn = self.conn if mine else self._reader()
        with storage.guard(str(self.path.parent), "a read"):
            outer = conn.in_transaction()
            try:
                yield conn
            finally:
                if not mine:  # a result read in part (``first()``) would block the next read
                    self.driver().abort()
                if not outer and conn.in_transaction():
                    conn.rollback()

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """Reads of the catalog and of the in-memory state that agree with each other: the
        gate held shared, so no commit happens meanwhile (a writer takes the gate alone
        before its commit) and every catalog read of the block sees the commit the memory
        shows. No transaction is begun for it: a search that reads only memory makes no
        round trip to DuckDB (a BEGIN and a ROLLBACK per search cost more than the HNSW
        search itself); a read that autobegins one ends it with the block."""
        with self.gate.shared(), self.reading() as conn:
            yield conn

    def _reader(self) -> Connection:
        if self._readers is None:
            with self._readers_made:  # not the writer lock: a reader may hold the gate
                if self._readers is None:
                    self._readers = ReadConnections(self._cursor, self._setup_cursor)
        return self._readers.mine()

    def _cursor(self) -> Any:
        """A new DuckDB connection to the same database (its cursor), below duckdb_engine's
        wrapper of the writer's."""
        return self.raw._ConnectionWrapper__c.cursor()

    def _setup_cursor(self, raw: Any) -> None:
        if self.encrypted:
            raw.execute(f"USE {ENCRYPTED_ALIAS}")

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

    def driver(self) -> Any:
        """The DuckDB connection this thread reads and registers Arrow tables on: the
        writer's in the thread that holds the writer lock, else this thread's own."""
        return self.raw if self.lock.mine else self._reader().connection.driver_connection

    @contextmanager
    def arrow(self, name: str, table: pa.Table) -> Iterator[str]:
        """Expose an Arrow table to SQL under ``name`` for the block (no row-by-row copy),
        on this thread's connection (:meth:`driver`)."""
        raw = self.driver()
        raw.register(name, table)
        try:
            yield name
        finally:
            raw.unregister(name)

    def query_arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run SQL on this thread's connection and fetch the result as one Arrow table."""
        with storage.guard(str(self.path.parent), "a read"):
            raw = self.driver()
            if not self.lock.mine:
                raw.abort()  # a reader's connection only reads: a result left in part goes
            return raw.sql(sql, params=params or None).to_arrow_table()

    def select_arrow(self, stmt: sa.Select[Any]) -> pa.Table:
        """Run a SQLAlchemy select (bound parameters kept bound) and fetch it as Arrow."""
        compiled = stmt.compile(
            dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = [compiled.params[name] for name in compiled.positiontup or ()]
        return self.query_arrow(str(compiled), params)

    def close(self) -> None:
        """Release the database (DuckDB checkpoints its log into the file; a disk that
        refuses that only leaves the log to replay at the next open)."""
        with self.lock:
            if self._readers is not None:
                self._readers.close()
            lost = "the log is replayed at the next open"
            with storage.warn_instead(str(self.path.parent), "the checkpoint on close", lost):
                self.conn.close()
            self.engine.dispose()
