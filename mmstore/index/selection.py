"""FAISS selectors for searches that skip vectors: a filter's matches and tombstones as one
bitmap over an approximate index's positions."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmstore.index.backend import faiss


def bitmap_selector(dead: np.ndarray, allowed: np.ndarray | None) -> tuple[Any, float, Any]:
    """A bitmap selector over the positions of ``dead`` (the base's tombstones) letting
    through the live ones, or only ``allowed`` positions (None when neither applies); the
    share of the base it allows; and what must outlive the search (FAISS does not own
    the bitmap)."""
    if allowed is None and not dead.any():
        return None, 1.0, None
    mask = ~dead if allowed is None else np.zeros(len(dead), bool)
    selectivity = 1.0
    if allowed is not None:
        mask[allowed] = True
        selectivity = float(mask.mean())
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(dead), faiss.swig_ptr(bitmap))
    return selector, selectivity, (bitmap, selector)
