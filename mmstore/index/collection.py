"""The indexes of one collection as a cache of the catalog: loaded on first use, checked
against their manifest rows (checksum, dimension, encoder), rebuilt when they do not match,
caught up with what the catalog holds beyond them, and saved atomically. In a store with
segment files, an IVF index reads its float32 vectors from its field's rows there
(:mod:`mmstore.index.rows`), and its file holds the codes only."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from mmstore.config import IndexOptions
from mmstore.encoding.fields import Field
from mmstore.index import file as indexfile
from mmstore.index.coarse import Coarse
from mmstore.index.fork import optimized_copy
from mmstore.index.rows import SegmentRows
from mmstore.index.vectors import VectorIndex
from mmstore.plugin.events import Event, IndexRebuilt, IndexSaved
from mmstore.storage import digest, embeddings, schema, stamp
from mmstore.storage import failures as storage
from mmstore.storage.atomic import write_atomic
from mmstore.storage.catalog import Catalog

log = logging.getLogger(__name__)
#: save an index once this many changes are not yet in its file
SAVE_EVERY = 200_000


@dataclass
class _Entry:
    index: VectorIndex
    unsaved: int = 0


class CollectionIndexes:
    """Indexes of one collection's fields, keyed by field name and encoder identity: while
    a field is re-embedded, the index of its active space and that of the space being
    filled are both held; only the active one is saved (the other is rebuilt from the
    catalog when needed)."""

    def __init__(
        self,
        catalog: Catalog,
        folder: Path,
        collection: str,
        options: IndexOptions,
        track: Callable[[Event], None],
    ) -> None:
        self.catalog, self.folder, self.collection = catalog, folder, collection
        self.options, self.track = options, track
        self._entries: dict[tuple[str, str], _Entry] = {}
        #: (field, encoder key) of spaces being filled by a re-embedding
        self.filling: set[tuple[str, str]] = set()
        #: field -> (checksum, stamp) of a file just checked in full, to record in its row
        self._stamps: dict[str, tuple[str, str]] = {}
        #: spaces loaded from a damaged file, whose rebuilt index is to be saved
        self._repaired: set[tuple[str, str]] = set()
        self._loading = threading.Lock()

    def get(self, field: Field) -> VectorIndex:
        """The field's index, loaded (or rebuilt) and caught up on first use, by one thread
        while others wait for it."""
        key = (field.name, field.key)
        entry = self._entries.get(key)
        if entry is None:
            with self._loading:
                entry = self._entries.get(key)
                if entry is None:
                    entry, repaired = self._load(field)
                    self._entries[key] = entry
                    if repaired:
                        self._repaired.add(key)
        if self._repaired or self._stamps:
            self._settle(field)
        return entry.index

    def _settle(self, field: Field) -> None:
        """Replace a damaged file now rather than at close, and record a checked file's
        stamp, where the writer lock is free this moment (a reader never waits for the
        writer; what is not done now is done at a later load, or the save at close)."""
        lock = self.catalog.lock
        if self.catalog.read_only or not lock.acquire(blocking=False):
            return
        try:
            if self.catalog.writing:
                return
            if (field.name, field.key) in self._repaired:
                self._repaired.discard((field.name, field.key))
                self.save_or_warn(field)
            self._record_stamp(field)
        finally:
            lock.release()

    def _record_stamp(self, field: Field) -> None:
        """Keep the stamp of a file just checked in full in its manifest row (if the row
        still names the same bytes), so that the next open need not hash it."""
        pending = self._stamps.pop(field.name, None)
        if pending is None:
            return
        t = schema.indexes
        action = f"recording the check of the index of {field.name!r}"
        store = str(self.catalog.path.parent)
        with (
            storage.warn_instead(store, action, "it is hashed again at the next open"),
            self.catalog.transaction(action, publish=False) as conn,
        ):
            conn.execute(
                t.update()
                .where(t.c.collection == self.collection, t.c.field == field.name)
                .where(t.c.checksum == pending[0])
                .values(stamp=pending[1])
            )

    # -- loading ------------------------------------------------------------------------
    def _file(self, field: Field) -> Path:
        return self.folder / f"{field.name}-{field.key}.mmi"

    def file_bytes(self, field: Field) -> int:
        """The size of the field's saved index file (0 before the first save)."""
        try:
            return self._file(field).stat().st_size
        except FileNotFoundError:
            return 0

    def _load(self, field: Field) -> tuple[_Entry, bool]:
        """The entry, and whether its file was damaged (the index rebuilt from the catalog)."""
        index, reason = self._from_file(field)
        damaged = False
        if index is None:
            index = VectorIndex(field.identity.dim, self.options)
            if reason != "no index yet":
                log.warning("index %s.%s rebuilt: %s", self.collection, field.name, reason)
                store = str(self.catalog.path.parent)
                self.track(IndexRebuilt(store, self.collection, field.name, str(reason)))
                damaged = not str(reason).startswith("built for encoder")
        held = embeddings.live_rows(self.catalog, self.collection, field.name, field.key)
        changed = self._catch_up(field, index, held[0])
        if self.catalog.segments is not None:  # the rows read once serve the binding too
            source = SegmentRows(self.catalog, self.collection, field.name, field.key, held)
            _bind(index, source)
        return _Entry(index, unsaved=changed + (0 if reason is None else index.size)), damaged

    def rebind(self) -> None:
        """Read every loaded IVF index's vectors from the rows where the catalog keeps them
        now (after a compaction of the segment files moved them)."""
        for entry in self._entries.values():
            source = entry.index.source
            if isinstance(source, SegmentRows):
                source.refresh()
                _bind(entry.index, source)

    def _manifest(self, field: Field) -> sa.Row | None:
        t = schema.indexes
        with self.catalog.reading() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.collection == self.collection, t.c.field == field.name)
            ).all()
        return rows[0] if rows else None

    def _from_file(self, field: Field, full: bool = False) -> tuple[VectorIndex | None, str | None]:
        """The saved index if it matches its manifest, else None and why not. Its bytes are
        hashed unless the file is as stamped at its last full check (and not ``full``)."""
        row = self._manifest(field)
        if row is None:
            return None, "no index yet"
        if row.encoder_key != field.key:
            if (field.name, field.key) in self.filling:
                return None, "no index yet"  # the new space of a re-embedding
            return None, f"built for encoder {row.encoder_key}, field now uses {field.key}"
        if row.file != self._file(field).name:  # never a path out of the folder (tampering)
            return None, f"manifest names file {row.file!r}, not {self._file(field).name!r}"
        path = self.folder / row.file
        if not path.is_file():
            return None, f"file {row.file} is missing"
        if row.dim != field.identity.dim:
            return None, f"dimension {row.dim} does not match the field's {field.identity.dim}"
        data, st = digest.mapped_with_stat(path)
        if full or row.stamp != stamp.of(st):
            if not digest.matches(data, row.checksum):
                return None, f"checksum of {row.file} does not match the manifest"
            if stamp.settled(st):
                self._stamps[field.name] = (row.checksum, stamp.of(st))
        try:
            index = indexfile.load(data, self.options)
        except Exception as e:  # a file we wrote, checksum-verified, yet unreadable
            return None, f"file {row.file} is unreadable: {e}"
        if index.dim != field.identity.dim or index.last_vid != row.last_vid:
            return None, "file contents do not match the manifest"
        if isinstance(index.ann, Coarse) and index.ann.unbound and self.catalog.segments is None:
            return None, f"file {row.file} reads its vectors from segment files; there are none"
        return index, None

    def _catch_up(self, field: Field, index: VectorIndex, live: np.ndarray) -> int:
        """Apply what the catalog holds beyond the index (``live``: the vids the catalog
        holds now): deletions and newer vectors."""
        stale = index.live_vids()
        if np.array_equal(live, stale):  # the common case: the file is current
            return 0
        gone = stale[~np.isin(stale, live, assume_unique=True)]
        index.remove(gone)
        newer = live[live > index.last_vid]
        known = live[live <= index.last_vid]
        missing = known[~np.isin(known, stale, assume_unique=True)]
        if len(missing):  # the catalog has rows the index never saw: do not trust it
            log.warning(
                "index %s.%s lacks %d catalog rows; rebuilding",
                self.collection,
                field.name,
                len(missing),
            )
            index.__init__(field.identity.dim, self.options)  # type: ignore[misc]
            newer = live
        if len(newer):
            vids, vectors = self.read_vectors(field, after=index.last_vid)
            index.add(vids, vectors, adopt=True)  # read fresh: no second copy
        return len(gone) + len(newer)

    def live_vids(self, field: Field) -> np.ndarray:
        return embeddings.live_vids(self.catalog, self.collection, field.name, field.key)

    def read_vectors(self, field: Field, after: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Vids and vectors of the field newer than ``after``, in vid order, through Arrow."""
        return embeddings.vectors_after(
            self.catalog, self.collection, field.name, field.key, field.identity.dim, after
        )

    def verify(self, field: Field) -> dict[str, object]:
        """Whether the field's index (as loaded and caught up) holds exactly the catalog's
        live vectors, and what state its file is in."""
        live = self.live_vids(field)
        held = self.get(field).live_vids()
        missing = int((~np.isin(live, held)).sum())
        extra = int((~np.isin(held, live)).sum())
        saved, reason = self._from_file(field, full=True)
        if saved is not None:
            newer = int((live > saved.last_vid).sum())
            file = "current" if newer == 0 else f"behind by {newer} vectors (replayed on open)"
        elif reason == "no index yet":
            file = "none yet"
        elif str(reason).startswith("built for encoder"):  # a switch not yet saved
            file = f"stale: {reason} (rebuilt from the catalog, saved on close)"
        else:
            file = f"damaged: {reason}"
        return {
            "field": field.name,
            "catalog_vectors": len(live),
            "index_vectors": len(held),
            "missing_from_index": missing,
            "not_in_catalog": extra,
            "file": file,
            "ok": missing == 0 and extra == 0 and not file.startswith("damaged"),
        }

    # -- updates and saving -------------------------------------------------------------
    def apply(
        self, field: Field, added: tuple[np.ndarray, np.ndarray] | None, removed: np.ndarray
    ) -> None:
        """Apply a committed change to the field's index. An index not yet loaded is loaded
        now, catching up from the catalog (which already holds the change), so that it is
        kept current and saved on close."""
        entry = self._entries.get((field.name, field.key))
        if entry is None:
            self.get(field)
            return
        entry.index.remove(removed)
        if added is not None and len(added[0]):
            entry.index.add(*added, adopt=True)
        entry.unsaved += len(removed) + (0 if added is None else len(added[0]))

    def remove_everywhere(self, name: str, vids: np.ndarray) -> None:
        """Remove deleted records' vectors from every loaded index of the field."""
        for (fname, _), entry in self._entries.items():
            if fname == name:
                entry.unsaved += entry.index.remove(vids)

    def forget(self, name: str, key: str | None = None) -> None:
        """Drop loaded indexes of a field (of one encoder key, or all) so that the next use
        reloads and catches up from the catalog."""
        for entry_key in list(self._entries):
            if entry_key[0] == name and key in (None, entry_key[1]):
                del self._entries[entry_key]

    def maybe_save(self, fields: Mapping[str, Field]) -> None:
        for f in fields.values():
            entry = self._entries.get((f.name, f.key))
            if entry is not None and entry.unsaved >= SAVE_EVERY:
                self.save_or_warn(f)

    def save_all(self, fields: Mapping[str, Field]) -> None:
        """Optimize where it is due, then save every index of ``fields`` (the active
        spaces) with unsaved changes."""
        for f in fields.values():
            entry = self._entries.get((f.name, f.key))
            if entry is None:
                continue
            if entry.index.needs_optimize():
                self.optimize(f)
            if entry.unsaved:
                self.save(f)

    def optimize(self, field: Field) -> None:
        """Optimize the field's index: a graph is extended on a copy that then takes the
        index's place under the gate, so searches go on meanwhile and wait only for the
        swap; a compaction or a first build runs in place, under the gate, searches
        waiting for it. Holds the writer lock: writes wait for either."""
        with self.catalog.lock:
            index = self.get(field)
            entry = self._entries[(field.name, field.key)]
            new = optimized_copy(index)
            with self.catalog.gate.exclusive():
                if new is None:
                    index.optimize()
                else:
                    entry.index = new
            entry.unsaved += 1

    def save_or_warn(self, field: Field) -> None:
        """Save, or log why not when the disk refuses: the catalog holds every vector, so
        the index in memory keeps serving and is saved (or rebuilt) later."""
        store, action = str(self.catalog.path.parent), f"saving the index of {field.name!r}"
        consequence = "the index keeps serving from memory and is saved again later"
        with storage.warn_instead(store, action, consequence):
            self.save(field)

    def save(self, field: Field) -> None:
        """Write the index atomically, then record its manifest row; a refused write
        raises :class:`~mmstore.errors.StorageError` and leaves the previous file."""
        entry = self._entries[(field.name, field.key)]
        index = entry.index
        path = self._file(field)
        store, action = str(self.catalog.path.parent), f"saving the index of {field.name!r}"
        with storage.guard(store, action):
            checksum = write_atomic(path, indexfile.dump(index))
        t = schema.indexes
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.catalog.transaction(action, publish=False) as conn:  # no state follows
            conn.execute(
                t.delete().where(t.c.collection == self.collection, t.c.field == field.name)
            )
            conn.execute(
                t.insert().values(
                    collection=self.collection,
                    field=field.name,
                    encoder_key=field.key,
                    kind=index.kind,
                    file=path.name,
                    checksum=checksum,
                    dim=index.dim,
                    count=index.live,
                    last_vid=index.last_vid,
                    params=json.dumps(index.params()),
                    updated_at=now,
                )
            )
        for old in self.folder.glob(f"{field.name}-*.mmi"):
            if old != path:
                with contextlib.suppress(OSError):  # never read: the manifest names the file
                    old.unlink(missing_ok=True)
        entry.unsaved = 0
        self.track(
            IndexSaved(
                str(self.catalog.path.parent), self.collection, field.name, str(path), index.live
            )
        )


def _bind(index: VectorIndex, source: SegmentRows) -> None:
    """Have ``index`` read its IVF index's float32 vectors from ``source`` (and build the
    next one so), letting go of any it holds in memory."""
    index.source = source
    if isinstance(index.ann, Coarse):
        index.ann.bind(source, index.vids[: index.n_base])
