"""Vector segment files: the float32 vectors of one field's space (collection, field,
encoder key) in one append-only file beside the catalog, ``vectors/<collection>/``, named,
sized and checksummed by the catalog's ``mms_segments`` row (written in the transaction
that commits the vectors' rows). Bytes past the committed rows are a write that was rolled
back or killed, and are cut off; a block whose CRC-32 differs from the catalog's is refused
before any of its vectors is used."""

from __future__ import annotations

import datetime as dt
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from mmstore.errors import DamagedVectorsError
from mmstore.storage import schema

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: the bytes a checksum block covers (rounded down to whole vectors)
BLOCK_BYTES = 1 << 20
#: a segment is rewritten without its deleted rows once they are this share of it
COMPACT_SHARE = 0.2


@dataclass
class Segment:
    """One field's segment as the catalog records it (in the caller's transaction)."""

    collection: str
    field: str
    encoder_key: str
    file: str
    dim: int
    rows: int
    crcs: np.ndarray  # uint32, one per block of ``block_rows`` rows (the last may be partial)

    @property
    def block_rows(self) -> int:
        return max(1, BLOCK_BYTES // (self.dim * 4))

    @property
    def row_bytes(self) -> int:
        return self.dim * 4


def file_name(field: str, encoder_key: str, generation: int = 0) -> str:
    return f"{field}-{encoder_key}.{generation}.f32"


class SegmentFiles:
    """The segment files of one store, and the blocks this process has checked."""

    def __init__(self, folder: Path, store: str) -> None:
        self.folder, self.store = folder, store
        self._checked: dict[str, set[tuple[int, int]]] = {}

    def path(self, seg: Segment) -> Path:
        name = Path(seg.file).name  # never a path out of the folder (tampering)
        return self.folder / seg.collection / name

    # -- the catalog rows -----------------------------------------------------------------
    def get(self, conn: Connection, collection: str, field: str, key: str) -> Segment | None:
        row = conn.execute(sa.select(schema.segments).where(_one(collection, field, key))).first()
        return None if row is None else _segment(row)

    def of_collection(self, conn: Connection, collection: str) -> list[Segment]:
        t = schema.segments
        rows = conn.execute(sa.select(t).where(t.c.collection == collection)).all()
        return [_segment(r) for r in rows]

    def drop(self, conn: Connection, seg: Segment) -> Path:
        """Forget a segment without live rows in the caller's transaction; returns its file,
        to be removed once that commits."""
        conn.execute(
            schema.segments.delete().where(_one(seg.collection, seg.field, seg.encoder_key))
        )
        return self.path(seg)

    def check(self, seg: Segment) -> str | None:
        """Every block of the segment read and checked against the catalog again (not
        trusting this process's earlier checks): None, or what is wrong."""
        self._checked.pop(str(self.path(seg)), None)
        try:
            self._check(seg, self.mapped(seg), np.arange(len(seg.crcs)))
        except DamagedVectorsError as e:
            return e.problem
        return None

    def _put(self, conn: Connection, seg: Segment, new: bool) -> None:
        t = schema.segments
        values = {
            "file": seg.file,
            "dim": seg.dim,
            "rows": seg.rows,
            "crcs": seg.crcs.astype(np.uint32).tobytes(),
            "updated_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        }
        if new:
            key = {"collection": seg.collection, "field": seg.field, "encoder_key": seg.encoder_key}
            conn.execute(t.insert().values(**key, **values))
            return
        conn.execute(
            t.update().where(_one(seg.collection, seg.field, seg.encoder_key)).values(**values)
        )

    # -- writing --------------------------------------------------------------------------
    def append(
        self, conn: Connection, collection: str, field: str, key: str, vectors: np.ndarray
    ) -> np.ndarray:
        """Append ``vectors`` to the field's segment (made on first use), synced to disk
        before the caller's transaction commits the new length; returns their row
        positions."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        seg = self.get(conn, collection, field, key)
        new = seg is None
        if seg is None:
            seg = Segment(
                collection,
                field,
                key,
                file_name(field, key),
                vectors.shape[1],
                0,
                np.empty(0, np.uint32),
            )
        path = self.path(seg)
        path.parent.mkdir(parents=True, exist_ok=True)
        start = seg.rows
        with open(path, "ab+") as f:
            f.truncate(start * seg.row_bytes)  # a rolled-back or killed write's bytes go
            os.pwrite(f.fileno(), _raw(vectors), start * seg.row_bytes)
            os.fsync(f.fileno())
        seg.crcs = _extended(seg, vectors)
        seg.rows = start + len(vectors)
        self._put(conn, seg, new)
        return np.arange(start, seg.rows, dtype=np.int64)

    def rewrite(self, conn: Connection, seg: Segment, keep: np.ndarray) -> Path:
        """Write the rows ``keep`` (positions, in order) of ``seg`` into the next generation
        of its file and record it in the caller's transaction; returns the old file, to be
        removed once that commits. The new positions are ``0..len(keep)``."""
        old = self.path(seg)
        rows = self.read(seg, keep)
        generation = int(seg.file.rsplit(".", 2)[1]) + 1
        fresh = Segment(
            seg.collection,
            seg.field,
            seg.encoder_key,
            file_name(seg.field, seg.encoder_key, generation),
            seg.dim,
            0,
            np.empty(0, np.uint32),
        )
        path = self.path(fresh)
        with open(path, "wb") as f:
            f.write(_raw(np.ascontiguousarray(rows)))
            os.fsync(f.fileno())
        fresh.crcs, fresh.rows = _extended(fresh, rows), len(rows)
        self._put(conn, fresh, new=False)
        return old

    def trim(self, conn: Connection) -> list[str]:
        """Cut every segment file back to its committed rows and remove files no catalog
        row names (a compaction killed before or after its commit); returns what was done."""
        done = []
        named = set()
        for row in conn.execute(sa.select(schema.segments)).all():
            seg = _segment(row)
            path = self.path(seg)
            named.add(path)
            size = path.stat().st_size if path.is_file() else None
            if size is not None and size > seg.rows * seg.row_bytes:
                os.truncate(path, seg.rows * seg.row_bytes)
                done.append(f"{path.name}: cut {size - seg.rows * seg.row_bytes} uncommitted bytes")
        for path in sorted(self.folder.glob("*/*.f32")) if self.folder.is_dir() else []:
            if path not in named:
                path.unlink()
                done.append(f"{path.name}: removed (no catalog row names it)")
        return done

    # -- reading --------------------------------------------------------------------------
    def read(self, seg: Segment, positions: np.ndarray) -> np.ndarray:
        """The vectors at ``positions`` (an int64 array), copied out of the mapped file after
        each block they lie in is checked against the catalog's CRC."""
        if len(positions) == 0:
            return np.empty((0, seg.dim), np.float32)
        return self.take(seg, self.mapped(seg), positions)

    def take(self, seg: Segment, matrix: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The rows ``positions`` of ``matrix`` (``seg`` mapped), each block they lie in
        checked against the catalog's CRC first (once per process)."""
        if len(positions) == 0:
            return np.empty((0, seg.dim), np.float32)
        self._check(seg, matrix, np.unique(positions // seg.block_rows))
        first, last = int(positions[0]), int(positions[-1])
        if last - first + 1 == len(positions) and bool(np.all(np.diff(positions) == 1)):
            return np.array(matrix[first : last + 1])  # a run: one copy
        return matrix[positions]

    def mapped(self, seg: Segment) -> np.ndarray:
        """The segment's committed rows, mapped, once its size and checksum count fit the
        catalog (the mapping outlives a compaction that replaces the file: it keeps the
        rows as they were), for :meth:`take`."""
        path = self.path(seg)
        size = path.stat().st_size if path.is_file() else -1
        if size < seg.rows * seg.row_bytes:
            found = "missing" if size < 0 else f"{size} bytes"
            raise DamagedVectorsError(
                self.store,
                seg.collection,
                seg.field,
                f"segment file {path.name} is {found}, the catalog commits "
                f"{seg.rows} vectors ({seg.rows * seg.row_bytes} bytes)",
            )
        blocks = -(-seg.rows // seg.block_rows)
        if len(seg.crcs) != blocks:
            raise DamagedVectorsError(
                self.store,
                seg.collection,
                seg.field,
                f"the catalog records {len(seg.crcs)} checksums for the {blocks} blocks of "
                f"segment file {path.name}",
            )
        if seg.rows == 0:
            return np.empty((0, seg.dim), np.float32)
        return np.memmap(path, np.float32, "r", shape=(seg.rows, seg.dim))

    def _check(self, seg: Segment, matrix: np.ndarray, blocks: np.ndarray) -> None:
        checked = self._checked.setdefault(str(self.path(seg)), set())
        todo = [int(b) for b in blocks if (int(b), int(seg.crcs[b])) not in checked]
        if not todo:
            return
        step = seg.block_rows

        def crc(b: int) -> int:
            return zlib.crc32(_raw(matrix[b * step : (b + 1) * step]))

        if len(todo) > 16:
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                found = list(pool.map(crc, todo))
        else:
            found = [crc(b) for b in todo]
        for b, got in zip(todo, found, strict=True):
            if got != int(seg.crcs[b]):
                first, last = b * step, min((b + 1) * step, seg.rows) - 1
                raise DamagedVectorsError(
                    self.store,
                    seg.collection,
                    seg.field,
                    f"block {b} of segment file {self.path(seg).name} (rows {first}-{last}) "
                    "does not match its checksum",
                )
            checked.add((b, got))


def _one(collection: str, field: str, key: str) -> sa.ColumnElement[bool]:
    """The ``mms_segments`` row of one space."""
    t = schema.segments
    return sa.and_(t.c.collection == collection, t.c.field == field, t.c.encoder_key == key)


def _raw(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    return array.reshape(-1).view(np.uint8).data


def _segment(row: sa.Row[Any]) -> Segment:
    crcs = np.frombuffer(row.crcs, np.uint32).copy()
    return Segment(row.collection, row.field, row.encoder_key, row.file, row.dim, row.rows, crcs)


def _extended(seg: Segment, vectors: np.ndarray) -> np.ndarray:
    """The segment's block CRCs after ``vectors`` are appended to its ``seg.rows`` rows:
    the partial last block continues its CRC, new blocks get their own."""
    crcs = list(seg.crcs)
    step, at, done = seg.block_rows, seg.rows, 0
    while done < len(vectors):
        block, offset = divmod(at, step)
        take = min(step - offset, len(vectors) - done)
        data = _raw(vectors[done : done + take])
        if offset:
            crcs[block] = zlib.crc32(data, int(crcs[block]))
        else:
            crcs.append(zlib.crc32(data))
        done, at = done + take, at + take
    return np.array(crcs, np.uint32)
