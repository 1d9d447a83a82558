"""The error hierarchy: one root that knows its HTTP status, subclasses that also inherit
the nearest builtin, and messages that say what failed, which name, and what to do."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable, Sequence


class MMStoreError(Exception):
    """Root of every error mmstore raises on purpose."""

    http_status: int = 500

    @classmethod
    def remote(cls, message: str) -> MMStoreError:
        """An instance that says ``message``, built without the constructor's arguments:
        how the HTTP client raises the error a service answered with."""
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        error.message = message  # type: ignore[attr-defined]  # read by classes' __str__
        return error


class ConfigError(MMStoreError, ValueError):
    """A configuration (collection, encoder, plugin option) is invalid."""

    http_status = 400


class UnknownNameError(MMStoreError, KeyError):
    """A name (encoder, modality, collection, field, head) is not known.

    The message lists what is available and the closest match.
    """

    http_status = 404

    def __init__(self, kind: str, name: str, available: Iterable[str], hint: str = "") -> None:
        self.kind, self.name = kind, name
        self.available = sorted(available)
        close = difflib.get_close_matches(name, self.available, n=1)
        msg = f"unknown {kind} {name!r}; available: {', '.join(self.available) or '(none)'}"
        if close:
            msg += f"; did you mean {close[0]!r}?"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(MMStoreError, ValueError):
    """Two plugins registered the same name for one kind of thing."""

    http_status = 500

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind, self.name, self.plugins = kind, name, (first, second)
        super().__init__(
            f"{kind} {name!r} is registered by two plugins: {first!r} and {second!r}; "
            "uninstall or block one of them (or rename its class's `name`)"
        )


class AlreadyExistsError(MMStoreError, ValueError):
    """Something created twice (a collection)."""

    http_status = 409


class NotFoundError(MMStoreError, KeyError):
    """A lookup found nothing (records by id)."""

    http_status = 404

    def __str__(self) -> str:
        return str(self.args[0])


class RecordError(MMStoreError, ValueError):
    """A record was rejected: it names the record, the field and what to do."""

    http_status = 422

    def __init__(self, record_id: object, field: str | None, problem: str) -> None:
        self.record_id, self.field, self.problem = record_id, field, problem
        where = f"record {record_id!r}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")


class LimitExceededError(RecordError):
    """A record's value is larger than a limit of the service (text length, image pixels,
    audio duration); the record is named and the limit too."""

    http_status = 413


class InvalidInputError(MMStoreError, ValueError):
    """A request argument (query, filter, k) is invalid."""

    http_status = 400


class FilterError(InvalidInputError):
    """A structured filter could not be compiled."""


class PluginError(MMStoreError, RuntimeError):
    """A plugin raised or returned something it must not; chained to the cause."""

    http_status = 500

    def __init__(self, plugin: str, what: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {what}")


class EncoderError(PluginError):
    """An encoder failed or returned a malformed batch."""


class WeightsUnavailableError(MMStoreError, FileNotFoundError):
    """Model weights are neither a local file nor in a warm cache, and there is no network."""

    http_status = 503


class StoreLockedError(MMStoreError, RuntimeError):
    """Another process holds the store for writing (DuckDB allows one writer)."""

    http_status = 423

    def __init__(self, path: str, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(
            f"store {path!r} is locked for writing by {holder}; DuckDB lets no other "
            "process in while one writes (read-only opens included): close that process, "
            "or go through the service that holds it (the CLI does so by itself)"
        )


class EncryptionKeyError(MMStoreError, PermissionError):
    """A store's encryption key is missing, wrong, or given for a store that is not
    encrypted. Nothing was opened or changed; the key is never part of the message."""

    http_status = 403

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"store {path!r}: {_KEY_ADVICE[problem]}")


_KEY_ADVICE = {
    "missing": "it is encrypted and no key was given; open it with its key: "
    "mmstore.open(path, encryption_key=...) or the environment variable MMSTORE_ENCRYPTION_KEY",
    "wrong": "wrong encryption key (nothing was changed); open it with the key it was "
    "created with (encryption_key=... or MMSTORE_ENCRYPTION_KEY)",
    "unexpected": "it is not encrypted, but an encryption key was given; open it without one "
    "(unset MMSTORE_ENCRYPTION_KEY), or copy it into an encrypted store (docs/encryption.md)",
}


class EncryptionUnavailableError(MMStoreError, ImportError):
    """An encrypted store needs DuckDB's httpfs extension (its OpenSSL crypto), which comes
    from the optional package ``duckdb-extension-httpfs``; nothing is downloaded."""

    http_status = 500


class RayUnavailableError(MMStoreError, ImportError):
    """Ray ingest, re-embedding or head training was asked for, but Ray is not installed;
    the message says ``pip install 'mmstore[ray]'`` (:data:`RAY_INSTALL`)."""

    http_status = 500


RAY_INSTALL = "pip install 'mmstore[ray]'"


class DamagedLogError(MMStoreError, RuntimeError):
    """The catalog's write-ahead log could not be replayed: it was set aside under a new
    name (never deleted) and the store was not opened; the next open starts from the last
    checkpoint. The message says what may be lost and where the log is kept."""

    http_status = 503

    def __init__(self, store: str, loss: str) -> None:
        self.store = store
        super().__init__(
            f"store {store!r}: {loss}. Open it again to continue from the last checkpoint, "
            "or with mmstore.open(path, on_damaged_log='read_only') to look first"
        )


class DamagedVectorsError(MMStoreError, RuntimeError):
    """A vector segment file does not hold what the catalog committed (missing, cut short,
    or a block whose checksum differs): its vectors are refused, never used. The message
    names the collection, the field and the rows."""

    http_status = 500

    def __init__(
        self, store: str, collection: str, field: str, problem: str, records: str = ""
    ) -> None:
        self.store, self.collection, self.field = store, collection, field
        self.problem, self.records = problem, records
        super().__init__(
            f"store {store!r}: the stored vectors of {collection}.{field} are damaged: "
            f"{problem}{records}; restore the store's vectors/ folder from a backup, or "
            "delete those records and ingest them again"
        )


class StorageError(MMStoreError, OSError):
    """The disk refused a write (full, a file-size limit, an I/O error). Nothing of the
    call is half written; the message says what was being done and what to do. With
    ``reopen`` true, DuckDB gave up on the catalog after a failed sync: close the store and
    open it again (the call may then be found committed, whole)."""

    http_status = 507

    def __init__(self, number: int, store: str, action: str, where: str, reopen: bool) -> None:
        self.store, self.action, self.reopen = store, action, reopen
        if reopen:
            advice = (
                "the catalog refuses further writes: close the store and open it again once "
                "the disk is healthy (this call's changes are then there whole or not at all)"
            )
        elif number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            advice = "nothing of this call was written; free space and call it again"
        else:
            advice = "nothing of this call was written; check the disk, then call it again"
        super().__init__(number, os.strerror(number))
        self.message = f"store {store!r}: {action} failed: {self.strerror} ({where}); {advice}"

    def __str__(self) -> str:
        return self.message


class ReadOnlyError(MMStoreError, PermissionError):
    """A write was attempted on a store opened read-only."""

    http_status = 403


class StoreClosedError(MMStoreError, RuntimeError):
    """The store was used after close()."""

    http_status = 500


class EncoderChangedError(MMStoreError, RuntimeError):
    """A field's stored vectors came from another encoder identity than the one the
    installed plugins now build (a new encoder version or parameters)."""

    http_status = 409


class SchemaError(MMStoreError, RuntimeError):
    """The catalog's schema revision is unknown to this version of mmstore."""

    http_status = 500


class StaleHeadError(EncoderChangedError):
    """A head's input space was re-embedded (or its field removed) since it was trained."""

    def __init__(self, collection: str, name: str, reason: str) -> None:
        self.collection, self.name, self.reason = collection, name, reason
        super().__init__(
            f"head {name!r} of collection {collection!r} is stale: {reason}; retrain it with "
            f"col.train_head({name!r}, ...) on the current embeddings"
        )


class DamagedHeadError(MMStoreError, ValueError):
    """A head's files cannot be read or do not fit together (damaged or tampered with since
    training): they are refused, never used."""

    http_status = 500

    def __init__(self, collection: str, name: str, problem: str) -> None:
        self.collection, self.name, self.problem = collection, name, problem
        super().__init__(
            f"head {name!r} of collection {collection!r} is damaged: {problem}; retrain it "
            f"with col.train_head({name!r}, ...), or restore its folder from a backup"
        )


class SpaceMismatchError(InvalidInputError):
    """Query and target fields live in different embedding spaces."""


class UnusableVectorsError(EncoderError):
    """An encoder gave zero (under cosine) or non-finite vectors for some values."""

    def __init__(self, plugin: str, encoder: str, rows: Sequence[int]) -> None:
        self.rows = list(rows)  # positions of the unusable values in the batch
        super().__init__(
            plugin,
            f"encoder {encoder!r} returned {len(rows)} zero or non-finite vector(s); "
            "a zero vector has no direction for cosine similarity",
        )


class MissingPluginError(MMStoreError, LookupError):
    """A field's encoder or modality comes from a plugin not installed here: the collection
    opens with its other fields, and this one is refused by name until it is installed."""

    http_status = 503

    def __init__(self, collection: str, field: str, install: str) -> None:
        self.collection, self.field, self.install = collection, field, install
        super().__init__(
            f"field {field!r} of collection {collection!r} cannot be used here: {install}; "
            "its stored vectors and sources are kept, and the other fields work meanwhile"
        )


class ServiceUnavailableError(MMStoreError, ConnectionError):
    """The client could not reach the service (refused, timed out, or cut off)."""

    http_status = 503

    def __init__(self, url: str, cause: BaseException) -> None:
        self.url = url
        super().__init__(
            f"no answer from the mmstore service at {url} ({type(cause).__name__}: {cause}); "
            "is `mmstore serve` running there?"
        )


class ServiceBusyError(MMStoreError, RuntimeError):
    """The service had as many requests in hand as it admits (``max_inflight``) and
    answered 503 with ``Retry-After`` instead of queueing this one: send it again later."""

    http_status = 503


class JobInterruptedError(MMStoreError, RuntimeError):
    """A background job was running when its service stopped (killed, or shut down before
    the job finished); nothing of it was kept: start it again."""

    http_status = 500


class BeyondGpuError(MMStoreError, RuntimeError):
    """A search FAISS's GPU indexes cannot answer (k past ``GPU_MAX_K``): the caller
    answers it on the CPU."""

    http_status = 500


class GpuMemoryError(MMStoreError, RuntimeError):
    """FAISS ran out of GPU memory (it raises a plain RuntimeError): the index searches on
    the CPU from then on."""

    http_status = 503


def named(name: str, fallback: str | None = None) -> type[MMStoreError]:
    """The error class called ``name``, mmstore's own or a loaded plugin's; else the one
    called ``fallback``; else :class:`MMStoreError`: how the client raises the error a
    service answered with."""
    classes: dict[str, type[MMStoreError]] = {}
    todo: list[type[MMStoreError]] = [MMStoreError]
    while todo:
        cls = todo.pop()
        classes.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return classes.get(name) or classes.get(fallback or "") or MMStoreError
