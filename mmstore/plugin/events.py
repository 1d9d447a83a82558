"""Lifecycle events passed to the ``mmstore_track_event`` hook: one hook, many dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """Base of every event."""

    store: str


@dataclass(frozen=True)
class StoreOpened(Event):
    migrated_from: str | None = None


@dataclass(frozen=True)
class BatchEncoded(Event):
    collection: str = ""
    field: str = ""
    count: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class IngestCommitted(Event):
    """DuckDB has committed the call's records; the index has not yet caught up."""

    collection: str = ""
    run_id: int = 0
    written: int = 0
    unchanged: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class IngestFinished(Event):
    collection: str = ""
    run_id: int = 0
    written: int = 0
    unchanged: int = 0
    rejected: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class RecordsDeleted(Event):
    collection: str = ""
    ids: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class IndexRebuilt(Event):
    """An index file was missing or did not match its manifest and was rebuilt."""

    collection: str = ""
    field: str = ""
    reason: str = ""


@dataclass(frozen=True)
class IndexSaved(Event):
    collection: str = ""
    field: str = ""
    path: str = ""
    count: int = 0


@dataclass(frozen=True)
class ReembedProgress(Event):
    """A batch of a re-embedding committed: ``done`` of ``total`` records are in the new
    space (counting batches committed by earlier, interrupted calls)."""

    collection: str = ""
    field: str = ""
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class FieldSwitched(Event):
    """A re-embedded field now serves its new space; the old vectors are gone."""

    collection: str = ""
    field: str = ""
    old_key: str = ""
    new_key: str = ""
    vectors: int = 0
