"""What an ingest call holds until its transaction commits, to mirror in the indexes and the
hit cache then: the vectors added (up to a memory limit), the vids dropped, the new rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mmstore.encoding.fields import Field
from mmstore.index.commit import Change
from mmstore.index.hitcache import RecordRow

#: vectors kept in memory for the index after commit when no limit is given; past the
#: limit the index re-reads them from the catalog (slower, and more memory at its peak:
#: the Arrow column and its copy), so an ingest passes its index's memory budget
PENDING_LIMIT_BYTES = 512 * 1024 * 1024
SLAB_BYTES = 64 * 1024 * 1024


@dataclass
class Pending:
    """Changes to mirror in the indexes and the hit cache once the transaction commits."""

    #: per field: the vids of each chunk, and their vectors copied into slabs
    added: dict[str, tuple[list[np.ndarray], Slabs]] = field(default_factory=dict)
    removed: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rows: dict[str, RecordRow] = field(default_factory=dict)
    owners: list[tuple[int, str]] = field(default_factory=list)
    removed_owner_vids: list[int] = field(default_factory=list)
    nbytes: int = 0
    overflow: bool = False
    limit: int = PENDING_LIMIT_BYTES

    def hold(self, name: str, vids: np.ndarray, vectors: np.ndarray) -> None:
        """Keep a field's new vectors for the index, unless the limit is passed (then the
        index re-reads the catalog)."""
        if self.overflow:
            return
        self.nbytes += vectors.nbytes
        if self.nbytes > self.limit:
            self.overflow, self.added = True, {}
            return
        held_vids, slabs = self.added.setdefault(name, ([], Slabs(vectors.shape[1])))
        held_vids.append(vids)
        slabs.put(vectors)

    def remember(self, drop: list[tuple[str, int]]) -> None:
        """The (field, vid)s a chunk deleted."""
        for fname, vid in drop:
            self.removed.setdefault(fname, []).append(np.array([vid], np.int64))
            self.removed_owner_vids.append(vid)

    def change(self, fields: Mapping[str, Field]) -> Change:
        """All of it as one :class:`Change` for :func:`mmstore.index.commit.after_commit`."""
        change = Change(
            rows=self.rows, owners=self.owners, gone=self.removed_owner_vids, save=fields
        )
        change.removed = {n: np.concatenate(vids) for n, vids in self.removed.items()}
        if self.overflow:
            change.reload = list(fields.values())
        for name, (vids, slabs) in self.added.items():
            change.added.append((fields[name], np.concatenate(vids), slabs.drain()))
        self.added = {}
        return change


class Slabs:
    """Float32 rows held in slabs of at least :data:`SLAB_BYTES`, drained into one array
    with each slab let go of once copied: the peak is the rows and one slab, not twice
    the rows. A chunk smaller than that is copied into the open slab: its own array is
    below malloc's mmap threshold, so freeing it would not give its pages back. A larger
    chunk that owns its memory is kept as it is, as a slab of its own."""

    def __init__(self, dim: int) -> None:
        self.dim, self.rows = dim, max(1, SLAB_BYTES // (4 * dim))
        self.slabs: list[np.ndarray] = []
        self.filled: list[int] = []  # rows filled in each slab
        self.n = 0

    def put(self, vectors: np.ndarray) -> None:
        self.n += len(vectors)
        if vectors.nbytes >= SLAB_BYTES and vectors.base is None and vectors.flags.c_contiguous:
            self.slabs.append(vectors)  # the caller lets go of it
            self.filled.append(len(vectors))
            return
        done = 0
        while done < len(vectors):
            if not self.slabs or self.filled[-1] == len(self.slabs[-1]):
                self.slabs.append(np.empty((self.rows, self.dim), np.float32))
                self.filled.append(0)
            at = self.filled[-1]
            take = min(len(self.slabs[-1]) - at, len(vectors) - done)
            self.slabs[-1][at : at + take] = vectors[done : done + take]
            done += take
            self.filled[-1] += take

    def drain(self) -> np.ndarray:
        if len(self.slabs) == 1 and self.filled[0] == len(self.slabs[0]):
            out = self.slabs.pop()  # one chunk kept whole: it is the array already
        else:
            out = np.empty((self.n, self.dim), np.float32)
            self.slabs.reverse()
            at = 0
            for rows in self.filled:
                slab = self.slabs.pop()
                out[at : at + rows] = slab[:rows]
                at += rows
        self.filled, self.n = [], 0
        return out
