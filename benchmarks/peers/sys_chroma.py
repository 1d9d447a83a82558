"""Chroma with its persistent client: one collection, inner-product HNSW (max_neighbors 32,
ef_construction 80, as mmstore's default graph), the category as metadata, ``add`` in
batches of the client's maximum. The graph is built during ``add`` (no separate build);
``ef_search`` is swept to the recall target with ``collection.modify`` (and a fresh client,
without which a loaded index keeps its old width)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from peers.protocol import (
    EF_CANDIDATES,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    Dataset,
    System,
    sweep,
)

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb  # telemetry is off before the import

NAME = "bench"
HNSW = {"space": "ip", "max_neighbors": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}


class Chroma(System):
    name = "chroma"
    batch_api = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.client: Any = None
        self.col: Any = None
        self.ef = 100

    def ingest(self, data: Dataset) -> None:
        self.client = chromadb.PersistentClient(path=str(self.folder / "chroma"))
        self.col = self.client.create_collection(
            NAME, configuration={"hnsw": HNSW | {"ef_search": self.ef}}
        )
        ids, cats = data.ids(), data.cat_names()
        step = self.client.get_max_batch_size()
        for start in range(0, len(ids), step):
            stop = start + step
            self.col.add(
                ids=ids[start:stop],
                embeddings=data.base[start:stop],
                metadatas=[{"cat": c} for c in cats[start:stop]],
            )

    def tune(self, data: Dataset, target: float, budget_s: float) -> dict[str, Any]:
        return sweep(self, data, EF_CANDIDATES, self._ef, target, budget_s)

    def _ef(self, ef: int) -> None:
        """Change ``ef_search``. A loaded index keeps the width it was loaded with, so the
        client is made afresh (its system cache cleared) for the change to take effect."""
        from chromadb.api.client import SharedSystemClient

        self.ef = ef
        self.col.modify(configuration={"hnsw": {"ef_search": ef}})
        SharedSystemClient.clear_system_cache()
        self.client = chromadb.PersistentClient(path=str(self.folder / "chroma"))
        self.col = self.client.get_collection(NAME)

    def search(self, q: np.ndarray, k: int) -> list[str]:
        ids: list[str] = self.col.query(query_embeddings=q[None, :], n_results=k)["ids"][0]
        return ids

    def search_batch(self, qs: np.ndarray, k: int) -> list[list[str]]:
        ids: list[list[str]] = self.col.query(query_embeddings=qs, n_results=k)["ids"]
        return ids

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        result = self.col.query(query_embeddings=q[None, :], n_results=k, where={"cat": cat})
        ids: list[str] = result["ids"][0]
        return ids

    def params(self) -> dict[str, Any]:
        return HNSW | {"ef_search": self.ef}

    @classmethod
    def reopen(cls, folder: Path, params: dict[str, Any]) -> System:
        system = cls(folder)
        system.client = chromadb.PersistentClient(path=str(folder / "chroma"))
        system.col = system.client.get_collection(NAME)  # ef_search is kept in its config
        system.ef = params["ef_search"]
        return system

    @staticmethod
    def versions() -> dict[str, str]:
        return {"chromadb": metadata.version("chromadb")}


class ChromaText:
    """End to end: documents embedded by Chroma's own sentence-transformers embedding
    function on the bundled model's directory."""

    name = "chroma"

    def __init__(self, folder: Path, model_path: str) -> None:
        from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

        embed = SentenceTransformerEmbeddingFunction(
            model_name=model_path, device="cpu", normalize_embeddings=True
        )
        self.client = chromadb.PersistentClient(path=str(folder / "chroma-text"))
        self.col = self.client.create_collection(
            "texts", embedding_function=embed, configuration={"hnsw": HNSW}
        )
        self.step = self.client.get_max_batch_size()

    def add(self, records: list[dict[str, str]]) -> None:
        for start in range(0, len(records), self.step):
            part = records[start : start + self.step]
            self.col.add(
                ids=[r["id"] for r in part],
                documents=[r["text"] for r in part],
                metadatas=[{"cat": r["cat"]} for r in part],
            )

    def search(self, text: str) -> list[str]:
        ids: list[str] = self.col.query(query_texts=[text], n_results=10)["ids"][0]
        return ids

    def close(self) -> None:
        """Chroma's client has nothing to close."""
