"""The core's own hook implementations, registered first like any plugin: the ``trylast``
fallbacks for loading a payload and encoding a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmstore.plugin.encoder import Encoder
from mmstore.plugin.hookspecs import hookimpl
from mmstore.plugin.modality import Modality


@hookimpl(trylast=True)
def mmstore_load_payloads(
    modality: Modality, values: list[Any], record_ids: list[str], field: str
) -> list[Any]:
    """Validate the values with their modality."""
    return modality.validate_batch(values, record_ids, field)


@hookimpl(trylast=True)
def mmstore_encode_batch(encoder: Encoder, items: Sequence[Any], modality: str) -> np.ndarray:
    """Encode with the encoder itself."""
    return encoder.encode(items, modality)
