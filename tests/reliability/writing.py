"""The child side of R2: processes that rewrite one file (or one head folder) over and over,
alternating two known versions, until they are killed. Three writers: mmstore's atomic
write (:func:`mmstore.storage.atomic.write_atomic`, how index files are saved), FAISS's own
in-place ``write_index`` (the naive way, to show that the check bites), and a head's
artifacts (:func:`mmstore.heads.artifacts.write_head`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

VERSIONS = ("a", "b")


def payload(version: str, megabytes: int = 4) -> bytes:
    """Deterministic bytes of one version (different sizes, so truncation shows)."""
    rng = np.random.default_rng(0 if version == "a" else 1)
    size = megabytes * 1024 * 1024 + (0 if version == "a" else 12_345)
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_writer(path: str) -> None:
    from mmstore.storage.atomic import write_atomic

    data = {v: payload(v) for v in VERSIONS}
    while True:
        for v in VERSIONS:
            write_atomic(Path(path), [data[v]])


def faiss_index(version: str) -> Any:
    import faiss

    rng = np.random.default_rng(0 if version == "a" else 1)
    n = 20_000 if version == "a" else 15_000
    index = faiss.IndexFlatL2(64)
    index.add(rng.normal(size=(n, 64)).astype(np.float32))
    return index


def faiss_bytes(version: str) -> bytes:
    import faiss

    return bytes(faiss.serialize_index(faiss_index(version)))


def naive_faiss_writer(path: str) -> None:
    """FAISS's ``write_index``: truncates the file and rewrites it in place."""
    import faiss

    indexes = {v: faiss_index(v) for v in VERSIONS}
    while True:
        for v in VERSIONS:
            faiss.write_index(indexes[v], path)


def head_state(version: str) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0 if version == "a" else 1)
    return {"w": torch.randn(512, 512, generator=g), "b": torch.randn(512, generator=g)}


def head_meta(version: str) -> dict[str, Any]:
    return {
        "name": "h",
        "kind": "classifier",
        "config": {"version": version},
        "lineage": {"fields": {"emb": {"encoder_key": "k"}}},
        "metrics": {},
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def head_writer(store: str) -> None:
    import mmstore
    from mmstore.heads.artifacts import write_head

    with mmstore.open(store) as s:
        col = s.collection("c")
        states = {v: head_state(v) for v in VERSIONS}
        while True:
            for v in VERSIONS:
                write_head(col, "h", states[v], head_meta(v), lambda folder: {})
