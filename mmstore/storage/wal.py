"""A damaged DuckDB write-ahead log: detected when the catalog opens, set aside under a new
name (never deleted), and reported with what may be lost, so that the store never
crash-loops on a log it cannot replay (RELIABILITY.md: duckdb #19712, #22044, #25510).

DuckDB checksums each log entry and refuses to open a database whose log has a damaged
entry. A log whose damage makes DuckDB stop replaying early without an error is caught
by the commit count kept beside the catalog (below). A log cut short at its end is replayed
up to the cut, as after any crash: the commit count tells when that lost commits that had
returned."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mmstore.storage.atomic import fsync_dir

SUFFIX = ".wal"
QUARANTINE = ".damaged-"
_MARKERS = ("Failure while replaying WAL", "Corrupt WAL file")


@dataclass(frozen=True)
class DamagedLog:
    """A log that could not be replayed, and where it was set aside."""

    log: Path
    kept_as: Path
    size: int
    reason: str

    def loss(self) -> str:
        """What may be lost, for messages."""
        return (
            f"the changes committed since the store was last closed cleanly (a {self.size:,}-"
            f"byte write-ahead log that cannot be replayed: {self.reason}) may be lost; the "
            f"log is kept as {str(self.kept_as)!r} for inspection; re-ingest what was written "
            "since, and run `mmstore verify`"
        )


def is_damaged_log(error: BaseException) -> bool:
    """Whether opening failed because DuckDB could not replay the write-ahead log."""
    message = str(getattr(error, "orig", error))
    return any(m in message for m in _MARKERS)


def set_aside(database: Path, error: BaseException) -> DamagedLog:
    """Rename ``<database>.wal`` to ``<database>.wal.damaged-<UTC time>`` and say so."""
    log = database.with_name(database.name + SUFFIX)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = log.with_name(f"{log.name}{QUARANTINE}{stamp}")
    size = log.stat().st_size
    os.replace(log, kept)
    fsync_dir(log.parent)
    reason = str(getattr(error, "orig", error)).split("\n")[0][:300]
    return DamagedLog(log, kept, size, reason)


def set_aside_logs(database: Path) -> list[Path]:
    """Logs set aside earlier and still kept beside ``database``."""
    return sorted(database.parent.glob(f"{database.name}{SUFFIX}{QUARANTINE}*"))


# -- a log replayed only in part -----------------------------------------------------------
# DuckDB stops replaying, without an error, at an entry whose length field was damaged (it
# reads as a write cut short by a crash), so committed transactions after it would be lost
# silently. Every write transaction therefore also counts itself in the catalog (counter
# "commit") and, once committed, writes that count beside the catalog (no fsync needed:
# the count is only ever behind what DuckDB made durable). An open that finds the catalog
# behind the count knows the log was not replayed whole.

COMMITS = "commit"
DAMAGED = "damaged_log"  # logs replayed only in part, counted when set aside
MARK = ".commits"
REPLAYING = ".replaying"


def write_mark(database: Path, number: int) -> None:
    """Record that commit ``number`` returned (a rename, so never a torn number)."""
    mark = database.with_name(database.name + MARK)
    tmp = mark.with_name(mark.name + ".tmp")
    try:
        tmp.write_text(str(number))
        os.replace(tmp, mark)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_mark(database: Path) -> int | None:
    try:
        return int(database.with_name(database.name + MARK).read_text())
    except (OSError, ValueError):
        return None


def forget_mark(database: Path) -> None:
    database.with_name(database.name + MARK).unlink(missing_ok=True)


def preserve(database: Path) -> Path | None:
    """A copy of the log as it is before DuckDB replays (and removes) it, or None. A log
    exists only after a process died without closing the store, and holds at most the
    checkpoint threshold (512 MB), so the copy costs only the open after such a crash."""
    log = database.with_name(database.name + SUFFIX)
    if not log.is_file():
        return None
    copy = log.with_name(log.name + REPLAYING)
    shutil.copyfile(log, copy)
    return copy


def replay_loss(database: Path, copy: Path | None, replayed: int, marked: int) -> DamagedLog:
    """The report of a log replayed only up to commit ``replayed`` of ``marked``; the copy
    taken before the replay is kept as the damaged log."""
    log = database.with_name(database.name + SUFFIX)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = log.with_name(f"{log.name}{QUARANTINE}{stamp}")
    size = 0
    if copy is not None and copy.is_file():
        size = copy.stat().st_size
        os.replace(copy, kept)
        fsync_dir(log.parent)
    reason = (
        f"it replayed only up to commit {replayed} of {marked}: {marked - replayed} committed "
        "transactions are missing"
    )
    return DamagedLog(log, kept, size, reason)
