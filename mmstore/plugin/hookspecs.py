"""The plugin contract: every hook mmstore calls, with its exact signature and meaning.

Hooks are called with keyword arguments, so a hook can gain arguments without breaking
plugins that do not take them. Implement one with ``@mmstore.hookimpl`` on a function of a
module or an object registered through the entry point group ``mmstore`` or with
``store.plugins.register(obj)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from mmstore.config import CollectionContext
    from mmstore.plugin.encoder import Encoder
    from mmstore.plugin.events import Event
    from mmstore.plugin.modality import Modality

PROJECT = "mmstore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mmstore_register_encoders() -> list[type[Encoder]]:
    """Return encoder classes (subclasses of :class:`mmstore.Encoder`) this plugin provides.

    Each class has a unique ``name``; two plugins giving the same name fail when the store
    opens, naming both plugins.
    """
    raise NotImplementedError


@hookspec
def mmstore_register_modalities() -> list[type[Modality]]:
    """Return modality classes (subclasses of :class:`mmstore.Modality`) with unique names."""
    raise NotImplementedError


@hookspec
def mmstore_prepare_records(collection: CollectionContext, records: list[dict[str, Any]]) -> None:
    """Inspect or rewrite records in place before they are validated, hashed and encoded.

    Called once per chunk of an ingest, by every plugin that implements it, in
    registration order. ``collection.options`` holds the collection's plugin options (for
    example ``{"pii": {"kinds": ["email"]}}``). Raise :class:`mmstore.RecordError` to
    reject a record: with ``on_error="skip"`` only that record is dropped.
    """


@hookspec
def mmstore_prepare_batch(
    collection: CollectionContext, batch: pa.RecordBatch
) -> pa.RecordBatch | None:
    """The columnar form of :func:`mmstore_prepare_records`, for an Arrow batch.

    Return a batch with the same rows in the same order (columns rewritten), or ``None``
    to leave it as it is; each implementation sees the batch the one before returned, in
    the order ``mmstore_prepare_records`` runs. The batch's ids are not checked yet. A
    plugin that implements ``mmstore_prepare_records`` but not this hook sends every
    batch down the record path, one dict per record. Raise :class:`mmstore.RecordError`
    to reject a record: with ``on_error="skip"`` the batch goes down the record path,
    where ``mmstore_prepare_records`` drops only the records it rejects.
    """


@hookspec(firstresult=True)
def mmstore_load_payloads(
    modality: Modality, values: list[Any], record_ids: list[str], field: str
) -> list[Any]:
    """Turn a field's raw values (one chunk of records) into what its encoder takes.

    Return a list aligned with ``values``: each item is the validated value, or a
    :class:`mmstore.RecordError` *instance* (not raised) rejecting that record. The first
    non-``None`` result wins; the built-in implementation (``trylast``) calls
    ``modality.validate_batch``. A plugin that loads some values from elsewhere (a URL
    scheme of its own) resolves those and passes the rest to ``modality.validate_batch``.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def mmstore_encode_batch(encoder: Encoder, items: Sequence[Any], modality: str) -> np.ndarray:
    """Encode a batch; the first non-``None`` result wins.

    The built-in implementation (``trylast``) calls ``encoder.encode(items, modality)``.
    Wrap it (``hookwrapper``/``wrapper=True``) to cache, time or retry encoding.
    """
    raise NotImplementedError


@hookspec
def mmstore_track_event(event: Event) -> None:
    """Observe a lifecycle event (a dataclass from :mod:`mmstore.plugin.events`).

    Called after the fact; an exception here is logged, never allowed to undo the work.
    """
