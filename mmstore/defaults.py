"""The core's own hook implementations, registered first like any plugin: the ``trylast``
fallbacks for loading a payload and encoding a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmstore.encoders import Encoder
from mmstore.hookspecs import hookimpl
from mmstore.modalities import Modality


@hookimpl(trylast=True)
def mmstore_load_payload(modality: Modality, value: Any, record_id: str, field: str) -> Any:
    """Validate the value with its modality."""
    return modality.validate(value, record_id, field)


@hookimpl(trylast=True)
def mmstore_encode_batch(encoder: Encoder, items: Sequence[Any], modality: str) -> np.ndarray:
    """Encode with the encoder itself."""
    return encoder.encode(items, modality)
