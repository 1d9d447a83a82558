"""What a refused write becomes: the disk full, a file-size limit, an I/O error, from our
own file operations (an ``OSError``) or from DuckDB's (an exception naming the OS error),
is turned into one typed :class:`~mmstore.errors.StorageError` that says what was being
done and what to do.

A failed write never leaves a half-written store: our files are replaced atomically
(:mod:`mmstore.storage.atomic`) and DuckDB rolls the transaction back. A failed *sync* of DuckDB's
log is different: DuckDB then refuses every further statement ("the database has been
invalidated"), so the store must be closed and opened again, and the call that failed may
be found committed, whole, after the reopen (the disk may have kept the log's bytes; it
never keeps half a transaction). The error says which of the two happened."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator

import duckdb
import sqlalchemy as sa

from mmstore.errors import MMStoreError, StorageError

log = logging.getLogger("mmstore")

#: errno values that mean "the storage refused", never "the caller asked for a bad file"
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})

#: how DuckDB names an OS error in its messages, and the errno each stands for
_DUCKDB_FAULTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "File too large": errno.EFBIG,
    "Input/output error": errno.EIO,
    "Read-only file system": errno.EROFS,
    "fsync failed": errno.EIO,
}

#: DuckDB's words for a database that refuses everything after a fatal error
INVALIDATED = "database has been invalidated"


def fault_errno(error: BaseException) -> int | None:
    """The errno of a storage fault in ``error`` (ours or DuckDB's), or None."""
    if isinstance(error, MMStoreError):
        return None
    if isinstance(error, OSError):
        return error.errno if error.errno in STORAGE_ERRNOS else None
    if not isinstance(error, sa.exc.DBAPIError | duckdb.Error):
        return None  # only DuckDB's messages are read for an OS error
    message = str(getattr(error, "orig", None) or error)
    for words, number in _DUCKDB_FAULTS.items():
        if words in message:
            return number
    return errno.EIO if INVALIDATED in message else None


def invalidated(error: BaseException) -> bool:
    """Whether DuckDB gave up on its database (a failed sync): reopen to go on."""
    message = str(getattr(error, "orig", None) or error)
    return INVALIDATED in message or "FATAL Error" in message


def typed(error: BaseException, store: str, action: str) -> BaseException:
    """``error`` as a :class:`StorageError` if it is a storage fault, else itself."""
    number = fault_errno(error)
    if number is None:
        return error
    if isinstance(error, OSError) and error.filename:
        where = str(error.filename)
    else:
        where = str(getattr(error, "orig", None) or error).splitlines()[0]
    return StorageError(number, store, action, where, reopen=invalidated(error))


@contextlib.contextmanager
def guard(store: str, action: str) -> Iterator[None]:
    """Raise storage faults inside the block as :class:`StorageError`."""
    try:
        yield
    except BaseException as error:
        storage = typed(error, store, action)
        if storage is error:
            raise
        raise storage from error


@contextlib.contextmanager
def warn_instead(store: str, action: str, consequence: str) -> Iterator[None]:
    """For a write whose failure loses nothing (the catalog is the truth: an index file,
    the commit mark, a copy kept for a report): log a warning instead of raising."""
    try:
        yield
    except Exception as error:
        number = error.errno if isinstance(error, StorageError) else fault_errno(error)
        if number is None:
            raise
        log.warning("store %s: %s failed (%s); %s", store, action, os.strerror(number), consequence)
