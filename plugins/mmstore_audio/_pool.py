"""The audio plugin's thread pool (decoding and resampling release the GIL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from mmstore.plugin import pmap as shared_pmap

T = TypeVar("T")
R = TypeVar("R")


def pmap(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]`` in the shared ``audio`` pool."""
    return shared_pmap("audio", fn, items)
