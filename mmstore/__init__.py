"""mmstore: a plugin-based multimodal feature store and embedding service.

The user API: :func:`open` a :class:`Store`, get a :class:`Collection`, ingest (an
:class:`IngestReport`, with :class:`Rejected` records), re-embed (a :class:`ReembedReport`),
search (:class:`Hits` of :class:`Hit`), and the same calls over HTTP through
:class:`Client` (both collections satisfy :class:`CollectionAPI`). Every error mmstore
raises on purpose is a :class:`MMStoreError`, each class exported here. Plugin authors
import :mod:`mmstore.plugin`; its contracts are also exported here, as plugins written
against earlier releases import them.
"""

# ruff: noqa: I001, RUF022  (the imports and __all__ are grouped by audience, not sorted)

# the store, its collections, their reports and results
from mmstore._version import __version__
from mmstore.api import CollectionAPI, HeadReport
from mmstore.client import Client
from mmstore.collection import Collection
from mmstore.hits import Hit, Hits
from mmstore.ingest.report import IngestReport, Rejected
from mmstore.ingest.reembed import ReembedReport
from mmstore.store import Store, open

# every error class
from mmstore.errors import (
    AlreadyExistsError,
    BeyondGpuError,
    ConfigError,
    DamagedHeadError,
    DamagedVectorsError,
    DamagedLogError,
    DuplicateNameError,
    EncoderChangedError,
    EncoderError,
    EncryptionKeyError,
    EncryptionUnavailableError,
    FilterError,
    GpuMemoryError,
    InvalidInputError,
    JobInterruptedError,
    LimitExceededError,
    MissingPluginError,
    MMStoreError,
    NotFoundError,
    PluginError,
    RayUnavailableError,
    ReadOnlyError,
    RecordError,
    SchemaError,
    ServiceBusyError,
    ServiceUnavailableError,
    SpaceMismatchError,
    StaleHeadError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    UnknownNameError,
    UnusableVectorsError,
    WeightsUnavailableError,
)

# the plugin contracts (the whole plugin API: mmstore.plugin)
from mmstore.plugin.encoder import Encoder, EncoderIdentity, EncoderParams
from mmstore.plugin.hookspecs import hookimpl, hookspec
from mmstore.plugin.modality import Modality, ModalityOptions
from mmstore.storage.media import MediaStore

__all__ = [
    # the store, its collections, their reports and results
    "open",
    "Store",
    "Collection",
    "CollectionAPI",
    "IngestReport",
    "HeadReport",
    "Rejected",
    "ReembedReport",
    "Hit",
    "Hits",
    "Client",
    "__version__",
    # every error class
    "AlreadyExistsError",
    "BeyondGpuError",
    "ConfigError",
    "DamagedHeadError",
    "DamagedVectorsError",
    "DamagedLogError",
    "DuplicateNameError",
    "EncoderChangedError",
    "EncoderError",
    "EncryptionKeyError",
    "EncryptionUnavailableError",
    "FilterError",
    "GpuMemoryError",
    "InvalidInputError",
    "JobInterruptedError",
    "LimitExceededError",
    "MissingPluginError",
    "MMStoreError",
    "NotFoundError",
    "PluginError",
    "RayUnavailableError",
    "ReadOnlyError",
    "RecordError",
    "SchemaError",
    "ServiceBusyError",
    "ServiceUnavailableError",
    "SpaceMismatchError",
    "StaleHeadError",
    "StorageError",
    "StoreClosedError",
    "StoreLockedError",
    "UnknownNameError",
    "UnusableVectorsError",
    "WeightsUnavailableError",
    # the plugin contracts
    "Encoder",
    "EncoderIdentity",
    "EncoderParams",
    "MediaStore",
    "Modality",
    "ModalityOptions",
    "hookimpl",
    "hookspec",
]
