"""Deterministic splits by a hash of the record id: the same id always lands in the same
split, whatever dataset or run it appears in."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")


def id_fraction(record_id: str) -> float:
    """A number in [0, 1) from the blake2b digest of the id."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_splits(ids: Sequence[str], fractions: tuple[float, float, float]) -> np.ndarray:
    """Per id: 0 (train), 1 (val) or 2 (test), by where its hash fraction falls."""
    train, val, _ = fractions
    u = np.fromiter((id_fraction(i) for i in ids), np.float64, count=len(ids))
    return np.where(u < train, TRAIN, np.where(u < train + val, VAL, TEST)).astype(np.int8)
