"""The plugin-author API: everything a plugin imports, and the only mmstore module the
built-in plugins import (a third party's plugin needs nothing else either).

- hooks: :data:`hookimpl` marks an implementation, :mod:`mmstore.plugin.hookspecs` lists
  every hook with its signature;
- contracts: :class:`Encoder` (with :class:`EncoderParams`), :class:`Modality` (with
  :class:`ModalityOptions`), :class:`CollectionContext` for ``mmstore_prepare_records``;
- values: :class:`MediaStore` (the content-addressed media an image or audio value may
  point at, keys start with :data:`MEDIA_PREFIX`), :func:`canonical_json` for identities;
- shared pools: :func:`shared_pool`, :func:`pmap`, :func:`workers`;
- lifecycle events: :class:`Event` and its subclasses, passed to ``mmstore_track_event``;
- the errors a plugin raises or catches.
"""

from mmstore.config import CollectionContext
from mmstore.errors import (
    ConfigError,
    EncoderChangedError,
    EncoderError,
    MMStoreError,
    NotFoundError,
    RecordError,
    UnknownNameError,
    WeightsUnavailableError,
)
from mmstore.plugin.encoder import Encoder, EncoderIdentity, EncoderParams, canonical_json
from mmstore.plugin.events import (
    BatchEncoded,
    Event,
    FieldSwitched,
    IndexRebuilt,
    IndexSaved,
    IngestCommitted,
    IngestFinished,
    RecordsDeleted,
    ReembedProgress,
    StoreOpened,
)
from mmstore.plugin.hookspecs import hookimpl, hookspec
from mmstore.plugin.modality import Modality, ModalityOptions
from mmstore.plugin.pools import pmap, shared_pool, workers
from mmstore.storage.media import PREFIX as MEDIA_PREFIX
from mmstore.storage.media import MediaStore

__all__ = [
    "MEDIA_PREFIX",
    "BatchEncoded",
    "CollectionContext",
    "ConfigError",
    "Encoder",
    "EncoderChangedError",
    "EncoderError",
    "EncoderIdentity",
    "EncoderParams",
    "Event",
    "FieldSwitched",
    "IndexRebuilt",
    "IndexSaved",
    "IngestCommitted",
    "IngestFinished",
    "MMStoreError",
    "MediaStore",
    "Modality",
    "ModalityOptions",
    "NotFoundError",
    "RecordError",
    "RecordsDeleted",
    "ReembedProgress",
    "StoreOpened",
    "UnknownNameError",
    "WeightsUnavailableError",
    "canonical_json",
    "hookimpl",
    "hookspec",
    "pmap",
    "shared_pool",
    "workers",
]
