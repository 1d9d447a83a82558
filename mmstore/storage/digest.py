"""File checksums: a tree of sha256s (the sha256 of the sha256s of 64 MiB blocks), which
a reader checks on all cores at once over a memory-mapped file, and the plain sha256 of
the whole file that manifests written before it hold."""

from __future__ import annotations

import hashlib
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: bytes per block of the tree; hashlib lets go of the GIL while it hashes one
BLOCK = 64 << 20
PREFIX = "sha256-tree:"


class TreeHash:
    """The tree checksum of bytes given in pieces of any size (as a file is written)."""

    def __init__(self) -> None:
        self.blocks: list[bytes] = []
        self.current = hashlib.sha256()
        self.filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            take = min(len(view), BLOCK - self.filled)
            self.current.update(view[:take])
            self.filled, view = self.filled + take, view[take:]
            if self.filled == BLOCK:
                self.blocks.append(self.current.digest())
                self.current, self.filled = hashlib.sha256(), 0

    def hexdigest(self) -> str:
        last = [self.current.digest()] if self.filled or not self.blocks else []
        return PREFIX + hashlib.sha256(b"".join(self.blocks + last)).hexdigest()


def tree_digest(data: bytes | mmap.mmap) -> str:
    """:class:`TreeHash` of ``data``, its blocks hashed in parallel."""
    view = memoryview(data)
    spans = [view[i : i + BLOCK] for i in range(0, len(view), BLOCK)] or [view[:0]]
    workers = min(len(spans), os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        digests = list(pool.map(lambda span: hashlib.sha256(span).digest(), spans))
    return PREFIX + hashlib.sha256(b"".join(digests)).hexdigest()


def matches(data: bytes | mmap.mmap, expected: str) -> bool:
    """Whether ``data`` has the checksum ``expected`` (a tree, or an older plain sha256)."""
    if expected.startswith(PREFIX):
        return tree_digest(data) == expected
    return hashlib.sha256(data).hexdigest() == expected


def mapped(path: Path) -> bytes | mmap.mmap:
    """A file's bytes, memory-mapped read-only (read, when it is empty and cannot be
    mapped): arrays over them share the page cache instead of copying the file, and the
    mapping stays valid when the file is later replaced."""
    return mapped_with_stat(path)[0]


def mapped_with_stat(path: Path) -> tuple[bytes | mmap.mmap, os.stat_result]:
    """:func:`mapped`, and the status of the very file mapped (not of one renamed over it
    since)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size == 0:
            return b"", st
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), st
