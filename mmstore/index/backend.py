"""FAISS as this package calls it: the SWIG module (it has no usable type information, so
it is typed ``Any``) and its pointer helper."""

from __future__ import annotations

from typing import Any

import faiss as _faiss

faiss: Any = _faiss
swig_ptr = faiss.swig_ptr
