"""Test helpers: deterministic fake encoders for fast tests, and the conformance check that
every encoder (built-in or third-party) should pass.

Use in a plugin's own tests::

    from mmstore.testing import check_encoder
    check_encoder(MyEncoder(dim=16), ["a", "b", "c"], modality="text")
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from mmstore.encoders import Encoder, EncoderParams
from mmstore.hookspecs import hookimpl

TOKEN = re.compile(r"\w+")


class HashParams(EncoderParams):
    dim: int = Field(64, ge=2, le=4096)
    seed: int = 0


class HashTextEncoder(Encoder):
    """Text to a signed bag of hashed words: deterministic, instant, and texts that share
    words are close, so search results are predictable in tests."""

    name = "hash_text"
    version = "1"
    modalities = ("text",)
    Params = HashParams
    params: HashParams
    batch_size = 256

    @property
    def dim(self) -> int:
        return self.params.dim

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        out = np.zeros((len(items), self.dim), np.float32)
        for row, text in enumerate(items):
            for token in TOKEN.findall(str(text).lower()):
                h = hashlib.blake2b(f"{self.params.seed}:{token}".encode(), digest_size=8).digest()
                bucket = int.from_bytes(h[:4], "little") % self.dim
                out[row, bucket] += 1.0 if h[4] & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return out


class FakePlugin:
    """Registers the fake encoders: ``mmstore.open(path, plugins=[FakePlugin()])``."""

    @hookimpl
    def mmstore_register_encoders(self) -> list[type[Encoder]]:
        return [HashTextEncoder]


def check_encoder(
    encoder: Encoder, samples: Sequence[Any], modality: str, atol: float = 1e-4
) -> None:
    """Conformance: shape, dtype, empty batch, batch invariance, determinism and identity
    round trip. Raises AssertionError naming the first broken rule."""
    name = type(encoder).__name__
    assert isinstance(getattr(type(encoder), "name", None), str), f"{name} has no `name`"
    assert modality in encoder.modalities, f"{name} does not declare modality {modality!r}"
    assert encoder.metric in ("cosine", "ip"), f"{name}.metric is {encoder.metric!r}"
    dim = encoder.dim
    assert isinstance(dim, int) and dim > 0, f"{name}.dim must be a positive int, got {dim!r}"
    empty = encoder.encode([], modality)
    assert isinstance(empty, np.ndarray) and empty.shape == (0, dim), (
        f"{name}: an empty batch must give shape (0, {dim}), got {getattr(empty, 'shape', empty)}"
    )
    batch = encoder.encode(list(samples), modality)
    assert isinstance(batch, np.ndarray), f"{name}.encode must return a numpy array"
    assert batch.shape == (len(samples), dim), (
        f"{name}: shape {batch.shape}, expected ({len(samples)}, {dim})"
    )
    assert batch.dtype == np.float32, f"{name}: dtype {batch.dtype}, expected float32"
    assert np.isfinite(batch).all(), f"{name}: non-finite values"
    singles = np.concatenate([encoder.encode([s], modality) for s in samples])
    assert np.allclose(batch, singles, atol=atol), f"{name}: results depend on the batch"
    again = encoder.encode(list(samples), modality)
    assert np.allclose(batch, again, atol=atol), f"{name}: results are not deterministic"
    rebuilt = type(encoder)(**encoder.params.model_dump())
    assert rebuilt.space() == encoder.space(), f"{name}: identity does not round-trip"
    assert np.allclose(rebuilt.encode(list(samples), modality), batch, atol=atol), (
        f"{name}: an encoder rebuilt from its parameters gives other vectors"
    )
