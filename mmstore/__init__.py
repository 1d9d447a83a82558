"""mmstore: a plugin-based multimodal feature store and embedding service."""

from mmstore.client import Client
from mmstore.collection import Collection
from mmstore.encoders import Encoder, EncoderIdentity, EncoderParams
from mmstore.errors import (
    AlreadyExistsError,
    ConfigError,
    DamagedLogError,
    DuplicateNameError,
    EncoderChangedError,
    EncoderError,
    EncryptionKeyError,
    EncryptionUnavailableError,
    FilterError,
    InvalidInputError,
    LimitExceededError,
    MMStoreError,
    NotFoundError,
    PluginError,
    RayUnavailableError,
    ReadOnlyError,
    RecordError,
    SchemaError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    UnknownNameError,
    WeightsUnavailableError,
)
from mmstore.hits import Hit, Hits
from mmstore.hookspecs import hookimpl, hookspec
from mmstore.ingest import IngestReport, Rejected
from mmstore.media import MediaStore
from mmstore.modalities import Modality, ModalityOptions
from mmstore.search import SpaceMismatchError
from mmstore.store import Store, open

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "Client",
    "Collection",
    "ConfigError",
    "DamagedLogError",
    "DuplicateNameError",
    "Encoder",
    "EncoderChangedError",
    "EncoderError",
    "EncoderIdentity",
    "EncoderParams",
    "EncryptionKeyError",
    "EncryptionUnavailableError",
    "FilterError",
    "Hit",
    "Hits",
    "IngestReport",
    "InvalidInputError",
    "LimitExceededError",
    "MMStoreError",
    "MediaStore",
    "Modality",
    "ModalityOptions",
    "NotFoundError",
    "PluginError",
    "RayUnavailableError",
    "ReadOnlyError",
    "RecordError",
    "Rejected",
    "SchemaError",
    "SpaceMismatchError",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "UnknownNameError",
    "WeightsUnavailableError",
    "__version__",
    "hookimpl",
    "hookspec",
    "open",
]
