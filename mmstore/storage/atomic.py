"""Crash-safe replacement of files (write a temporary file in the same folder, fsync it,
rename it over the target, fsync the folder) and of whole folders (:func:`swap_folder`,
with :func:`recover_folders` on open). A reader sees the old version or the new, never a
mix and never none."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from mmstore.storage.digest import TreeHash

TMP_SUFFIX = ".mms-tmp"


def write_atomic(path: Path, chunks: Iterable[bytes | memoryview]) -> str:
    """Replace ``path`` with the concatenated chunks; return their tree checksum
    (:mod:`mmstore.storage.digest`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    digest = TreeHash()
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a failed write leaves no temporary behind
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


# -- whole folders (a head's artifacts) ---------------------------------------------------
#: a folder being written beside its final place, and the previous version set aside
FOLDER_TMP, FOLDER_OLD = ".tmp", ".old"


def swap_folder(tmp: Path, final: Path) -> None:
    """Put the complete folder ``tmp`` (its files fsynced) in the place of ``final``.

    POSIX has no atomic exchange of two folders, so the old version is renamed aside
    (``.<name>.<hex>.old``), the new one renamed in, then the old removed. A kill between
    the two renames leaves no ``final``: :func:`recover_folders` (run on open) renames the
    old version back, so a reader finds the old or the new folder, never none or a mix."""
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex}{FOLDER_OLD}")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old.exists():
            os.replace(old, final)
        raise
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_folders(root: Path) -> list[str]:
    """In ``root``: rename a set-aside old version back where its folder is missing, and
    remove the temporary and old folders that kills left; return what was done."""
    done: list[str] = []
    if not root.is_dir():
        return done
    hidden = sorted(p for p in root.iterdir() if p.name.startswith(".") and p.is_dir())
    for p in hidden:
        name, _, rest = p.name[1:].partition(".")
        final = root / name
        if p.suffix == FOLDER_OLD and name and not final.exists():
            os.replace(p, final)
            done.append(f"restored {name} from {p.name}")
        elif p.suffix in (FOLDER_TMP, FOLDER_OLD) and rest:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}")
    if done:
        fsync_dir(root)
    return done
