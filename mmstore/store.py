"""The store: a directory holding the catalog (DuckDB) and the index files beside it, with
one plugin manager. ``mmstore.open`` returns one."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import sqlalchemy as sa

from mmstore.collection import Collection
from mmstore.config import CollectionConfig, check_name, parse_collection_config
from mmstore.encoding.fields import record_fields
from mmstore.errors import (
    AlreadyExistsError,
    ReadOnlyError,
    SchemaError,
    StoreClosedError,
    UnknownNameError,
)
from mmstore.plugin.events import Event, StoreOpened
from mmstore.plugin.manager import PluginHost
from mmstore.storage import failures as storage
from mmstore.storage import migrations as migrate
from mmstore.storage import schema
from mmstore.storage.atomic import recover_folders, sweep_temporaries
from mmstore.storage.catalog import Catalog, OnDamagedLog
from mmstore.storage.media import MediaStore
from mmstore.storage.wal import set_aside_logs

if TYPE_CHECKING:
    from mmstore.datasets.aligned import AlignedDataset
    from mmstore.state import CollectionState

log = logging.getLogger(__name__)
CATALOG_FILE = "catalog.duckdb"


class Store:
    """An open store. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        plugins: Iterable[Any] = (),
        entrypoints: bool = True,
        block: Iterable[str] = (),
        encryption_key: str | None = None,
        on_damaged_log: OnDamagedLog = "refuse",
    ) -> None:
        self.plugins = PluginHost(plugins, entrypoints=entrypoints, block=block)
        self._temporary = str(path) == ":memory:"
        self.path = Path(tempfile.mkdtemp(prefix="mmstore-")) if self._temporary else Path(path)
        self.read_only = read_only
        self.media = MediaStore(self.path / "media")
        self._collections: dict[str, Collection] = {}
        self.closed = True
        if not read_only:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not (self.path / CATALOG_FILE).is_file():
            raise FileNotFoundError(f"no store at {str(self.path)!r} to open read-only")
        with storage.guard(str(self.path), "opening the store"):
            self.catalog = Catalog(
                self.path / CATALOG_FILE,
                read_only=read_only,
                encryption_key=encryption_key,
                on_damaged_log=on_damaged_log,
            )
        self.read_only = self.catalog.read_only  # read-only after a damaged log, if asked
        self.closed = False
        try:
            with storage.guard(str(self.path), "opening the store"):
                before = self._migrate()
            self._warn_of_set_aside_logs()
            if not self.read_only:
                sweep_temporaries(self.path / "indexes")
                sweep_temporaries(self.media.folder)
                self._trim_segments()
                self._recover_heads()
            self.catalog.lock_down()
        except BaseException:
            self.close()
            raise
        self.track(StoreOpened(str(self.path), before))

    def _warn_of_set_aside_logs(self) -> None:
        """Each open repeats that a damaged log was set aside, until it is removed."""
        for kept in set_aside_logs(self.catalog.path):
            log.warning(
                "store %s: a write-ahead log that could not be replayed is kept as %s; "
                "changes in it are not in the store (remove the file once dealt with)",
                self.path,
                kept.name,
            )

    def _trim_segments(self) -> None:
        """Cut vector segment files back to what the catalog committed."""
        if self.catalog.segments is not None:
            with self.catalog.reading() as conn:
                for what in self.catalog.segments.trim(conn):
                    log.warning("store %s: vectors/%s", self.path, what)

    def _recover_heads(self) -> None:
        """Finish or undo head folders that a killed training was swapping (see
        :func:`mmstore.storage.atomic.swap_folder`)."""
        root = self.path / "heads"
        if root.is_dir():
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                for what in recover_folders(folder):
                    log.warning("heads of %s: %s after an interrupted write", folder.name, what)

    def _migrate(self) -> str | None:
        conn = self.catalog.conn
        if not self.read_only:
            return migrate.upgrade(conn, self.catalog.segments)
        current = migrate.current_revision(conn)
        if current != migrate.head_revision():
            raise SchemaError(
                f"store {str(self.path)!r} has schema {current!r}; open it once "
                "for writing (or run `mmstore migrate`) to upgrade it"
            )
        return current

    def __repr__(self) -> str:
        encrypted = getattr(getattr(self, "catalog", None), "encrypted", False)
        flags = (" read-only" if self.read_only else "") + (" encrypted" if encrypted else "")
        return f"<Store {str(self.path)!r}{flags}>"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collections --------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        encoders: Mapping[str, Any],
        *,
        options: Mapping[str, Any] | None = None,
        index: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> Collection:
        """Create a collection whose fields are embedded by the given encoders.

        ``encoders`` maps a field name to ``{"encoder": NAME, "modality": M, **params}``
        (the modality defaults to the field name) or just an encoder name.
        """
        self.check_writable()
        check_name("collection", name)
        config = parse_collection_config(encoders, options, index)
        if name in self.collections():
            if exist_ok and self._stored_config(name) == config:
                return self.collection(name)
            raise AlreadyExistsError(
                f"collection {name!r} already exists"
                + (" with another configuration" if exist_ok else "")
            )
        col = Collection(self, name, config)  # fails on unknown encoders before writing
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.catalog.transaction() as conn:
            conn.execute(
                schema.collections.insert().values(
                    name=name, config=config.model_dump_json(), created_at=now
                )
            )
            record_fields(conn, name, col.fields)
        self._collections[name] = col
        return col

    def collection(self, name: str) -> Collection:
        """An existing collection; UnknownNameError lists the others."""
        self.check_open()
        found = self._collections.get(name)
        if found is None:  # threads that open it at once all get the first one kept
            opened = Collection(self, name, self._stored_config(name))
            found = self._collections.setdefault(name, opened)
        return found

    def _stored_config(self, name: str) -> CollectionConfig:
        t = schema.collections
        with self.catalog.reading() as conn:
            rows = conn.execute(sa.select(t.c.config).where(t.c.name == name)).all()
        if not rows:
            raise UnknownNameError("collection", name, self.collections())
        return CollectionConfig.model_validate_json(rows[0].config)

    def collections(self) -> list[str]:
        """Names of the collections, sorted."""
        self.check_open()
        with self.catalog.reading() as conn:
            return sorted(conn.execute(sa.select(schema.collections.c.name)).scalars())

    def drop_collection(self, name: str) -> None:
        """Delete a collection with its records, vectors and index files."""
        self.check_writable()
        self._stored_config(name)
        with self.catalog.transaction() as conn:
            for table in (
                schema.records,
                schema.embeddings,
                schema.fields,
                schema.indexes,
                schema.encoder_states,
                schema.segments,
            ):
                conn.execute(table.delete().where(table.c.collection == name))
            conn.execute(schema.collections.delete().where(schema.collections.c.name == name))
        self._collections.pop(name, None)
        for folder in ("indexes", "heads", "vectors"):
            shutil.rmtree(self.path / folder / name, ignore_errors=True)

    def align(
        self,
        left: str,
        right: str,
        *,
        by: str,
        on: str = "ts",
        tolerance: str | dt.timedelta | None = None,
        direction: Literal["backward", "forward"] = "backward",
    ) -> pa.Table:
        """Each ``left`` record with the ``right`` record of the same entity ``by`` as of
        its ``ts``, within ``tolerance`` (an as-of join; see :mod:`mmstore.datasets.asof`)."""
        from mmstore.datasets.asof import align

        return align(*self._states(left, right), by, on, tolerance, direction)

    def align_dataset(
        self,
        left: str,
        right: str,
        *,
        by: str,
        inputs: Mapping[str, Sequence[str]],
        on: str = "ts",
        tolerance: str | dt.timedelta | None = None,
        direction: Literal["backward", "forward"] = "backward",
        label: str | None = "label",
    ) -> tuple[AlignedDataset, AlignedDataset]:
        """Two datasets row-aligned to the ``left`` records by :meth:`align`, for training
        on streams: ``inputs={"left": [...], "right": [...]}`` names each side's fields;
        the right one's masks are False where no record matched
        (:func:`mmstore.datasets.asof.align_dataset`)."""
        from mmstore.datasets.asof import align_dataset

        return align_dataset(
            *self._states(left, right), by, inputs, on, tolerance, direction, label
        )

    def _states(self, left: str, right: str) -> tuple[CollectionState, CollectionState]:
        return self.collection(left).state, self.collection(right).state

    def collect_media(self, *, dry_run: bool = False) -> dict[str, int]:
        """Delete stored media (image and audio bytes) that no record refers to any more:
        after deletes, re-ingests with new content, dropped collections or failed ingests.
        Returns counts of blobs kept and removed and the bytes freed."""
        from mmstore.storage import media

        self.check_writable()
        return media.collect(self.media, media.referenced(self.catalog), dry_run=dry_run)

    # -- lifecycle ----------------------------------------------------------------------
    def track(self, event: Event) -> None:
        """Tell plugins about an event; their failures are logged, never raised."""
        try:
            self.plugins.hook.mmstore_track_event(event=event)
        except Exception:
            log.exception("a plugin failed on event %s", type(event).__name__)

    def check_open(self) -> None:
        if self.closed:
            raise StoreClosedError(f"store {str(self.path)!r} is closed")

    def check_writable(self) -> None:
        self.check_open()
        if self.read_only:
            raise ReadOnlyError(f"store {str(self.path)!r} is open read-only")

    def flush(self) -> None:
        """Save every index with changes not yet in its file."""
        self.check_open()
        for col in self._collections.values():
            col.flush()

    def close(self) -> None:
        """Save indexes, release the catalog (and the write lock)."""
        if self.closed:
            return
        try:
            if not self.read_only:
                for col in self._collections.values():
                    action = f"saving the indexes of {col.name!r}"
                    later = "they catch up from the catalog at the next open"
                    with storage.warn_instead(str(self.path), action, later):
                        col.flush()
        finally:
            self.closed = True
            for col in self._collections.values():
                for f in col.fields.values():
                    f.encoder.close()
            self.catalog.close()
            if self._temporary:
                shutil.rmtree(self.path, ignore_errors=True)


def open(
    path: str | Path,
    *,
    read_only: bool = False,
    plugins: Iterable[Any] = (),
    entrypoints: bool = True,
    block: Iterable[str] = (),
    encryption_key: str | None = None,
    on_damaged_log: OnDamagedLog = "refuse",
) -> Store:
    """Open (or create) the store at ``path``, a directory; ``":memory:"`` makes a temporary
    one removed on close. ``plugins`` are registered after the built-ins and the entry
    points; ``block`` names plugins not to load.

    ``encryption_key`` encrypts the catalog at rest (a new store is created encrypted; see
    docs/encryption.md); when None, the environment variable ``MMSTORE_ENCRYPTION_KEY`` is
    used if set. An encrypted store opened without its key, or a plaintext one with a key,
    raises :class:`~mmstore.EncryptionKeyError`.

    A write-ahead log that DuckDB cannot replay is set aside (``catalog.duckdb.wal.damaged-
    <time>``, never deleted); then ``on_damaged_log="refuse"`` raises
    :class:`~mmstore.DamagedLogError` saying what may be lost (the next open continues from
    the last checkpoint) and ``"read_only"`` opens read-only from the last checkpoint."""
    return Store(
        path,
        read_only=read_only,
        plugins=plugins,
        entrypoints=entrypoints,
        block=block,
        encryption_key=encryption_key,
        on_damaged_log=on_damaged_log,
    )


__all__ = ["Store", "open"]
