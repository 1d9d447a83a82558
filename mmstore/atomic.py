"""Crash-safe file replacement: write a temporary file in the same folder, fsync it, rename
it over the target, fsync the folder. A reader sees the old file or the new, never a mix."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

TMP_SUFFIX = ".mms-tmp"


def write_atomic(path: Path, chunks: Iterable[bytes | memoryview]) -> str:
    """Replace ``path`` with the concatenated chunks; return their sha256 hex digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files left by writes that were killed; return what was removed."""
    removed = []
    if folder.is_dir():
        for tmp in folder.rglob(f"*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def sha256_file(path: Path) -> tuple[str, bytes]:
    """Read a whole file once; return its sha256 and its bytes."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data
