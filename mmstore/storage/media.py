"""Media kept beside the store, content-addressed: image and audio bytes are written once
under their sha256, so that a new encoder version can re-embed without the originals.

A blob is written to a temporary file and renamed into place, so a reader never sees a
partial one. Blobs are synced to disk before the ingest that references them commits.
The blobs an ingest call wrote are removed when the call fails
(:meth:`MediaStore.written_by_call`), so a refused call leaves the media folder as it was;
one left by a crash stays as an unreferenced file (harmless: the same bytes map to the same
name, and ``collect`` removes it), never referenced by a half-written record.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmstore.errors import NotFoundError
from mmstore.storage.atomic import TMP_SUFFIX

PREFIX = "sha256:"
HEX = re.compile(r"[0-9a-f]{64}")


class MediaStore:
    """Content-addressed bytes under ``folder`` (``ab/cdef...``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._unsynced = False
        #: blobs written in the current :meth:`written_by_call` (None: outside one)
        self._written: list[Path] | None = None

    @contextlib.contextmanager
    def written_by_call(self) -> Iterator[None]:
        """Within an ingest's write transaction (whose catalog lock keeps other writers
        out): if the block fails, remove the blobs it wrote, which no record names (a blob
        that existed before is never one of them)."""
        self._written = []
        try:
            yield
        except BaseException:
            for path in self._written:
                with contextlib.suppress(OSError):  # one left behind is only unreferenced
                    path.unlink()
            raise
        finally:
            self._written = None

    @staticmethod
    def digest(data: bytes) -> str:
        """The name a blob is stored under: ``sha256:<hex>``."""
        return PREFIX + hashlib.sha256(data).hexdigest()

    def path(self, digest: str) -> Path:
        ok = isinstance(digest, str) and digest.startswith(PREFIX)
        hexdigest = digest[len(PREFIX) :] if ok else ""
        if not HEX.fullmatch(hexdigest):  # never a name that climbs out (a tampered catalog)
            raise NotFoundError(f"{digest!r} is not a media digest (sha256:<64 hex digits>)")
        return self.folder / hexdigest[:2] / hexdigest[2:]

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (once) and return its digest."""
        digest = digest or self.digest(data)
        path = self.path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._unsynced = True
        if self._written is not None:
            self._written.append(path)
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``, checked against it."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"media {digest} is missing from {self.folder}; restore the store's media "
                "folder from a backup, or ingest the record again from its original"
            ) from None
        if self.digest(data) != digest:
            raise NotFoundError(f"media {digest} at {path} is damaged (its sha256 differs)")
        return data

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def sync(self) -> None:
        """Flush blobs written since the last sync to disk (called before a commit)."""
        if self._unsynced:
            os.sync()
            self._unsynced = False


def referenced(catalog: Any) -> set[str]:
    """Every media digest that some record's stored sources name (all collections)."""
    table = catalog.query_arrow(
        "SELECT DISTINCT unnest(regexp_extract_all(sources, ?, 1)) AS digest FROM mms_records",
        [r'"media":"(sha256:[0-9a-f]{64})"'],
    )
    return set(table.column("digest").to_pylist())


def collect(media: MediaStore, keep: set[str], dry_run: bool = False) -> dict[str, int]:
    """Remove blobs not in ``keep`` (records deleted, re-ingested with other content, or an
    ingest that failed); return how many blobs were kept and removed, and the bytes freed."""
    kept = removed = freed = 0
    if not media.folder.is_dir():
        return {"kept": 0, "removed": 0, "bytes_freed": 0}
    for path in sorted(media.folder.glob("??/*")):
        if path.name.startswith("."):
            continue
        if PREFIX + path.parent.name + path.name in keep:
            kept += 1
            continue
        removed += 1
        freed += path.stat().st_size
        if not dry_run:
            path.unlink()
    return {"kept": kept, "removed": removed, "bytes_freed": freed}
