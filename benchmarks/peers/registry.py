"""The systems compared, by name: which module and class drive each, and which virtual
environment runs it (``main``: this project's, ``peers`` and ``pixeltable``: the ones the
command builds).
Nothing here imports a system's library."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    module: str
    cls: str
    env: str

    def load(self) -> Any:
        """The class that drives the system (imports its library)."""
        return getattr(importlib.import_module(f"peers.{self.module}"), self.cls)


SYSTEMS = {
    e.name: e
    for e in (
        Entry("mmstore", "sys_mmstore", "MMStore", "main"),
        Entry("mmstore-flat", "sys_mmstore", "MMStoreFlat", "main"),
        Entry("mmstore-ivf-sq8", "sys_mmstore", "MMStoreIVFSQ8", "main"),
        Entry("faiss-flat", "sys_faiss", "FaissFlat", "main"),
        Entry("faiss-ivf", "sys_faiss", "FaissIVF", "main"),
        Entry("faiss-hnsw", "sys_faiss", "FaissHNSW", "main"),
        Entry("faiss-ivf-sq8", "sys_faiss", "FaissIVFSQ8", "main"),
        Entry("faiss-ivf-sq8-refine", "sys_faiss", "FaissIVFSQ8Refine", "main"),
        Entry("faiss-hnsw-sq", "sys_faiss", "FaissHNSWSQ", "main"),
        Entry("duckdb-brute", "sys_duckdb", "DuckDBBrute", "main"),
        Entry("duckdb-vss", "sys_duckdb", "DuckDBVss", "peers"),
        Entry("chroma", "sys_chroma", "Chroma", "peers"),
        Entry("lancedb-flat", "sys_lancedb", "LanceFlat", "peers"),
        Entry("lancedb-ivfpq", "sys_lancedb", "LanceIvfPq", "peers"),
        Entry("lancedb-ivfrq", "sys_lancedb", "LanceIvfRq", "peers"),
        Entry("pixeltable", "sys_pixeltable", "Pixeltable", "pixeltable"),
    )
}
#: end-to-end text ingest, each with its own sentence-transformers embedding
TEXT = {
    e.name: e
    for e in (
        Entry("mmstore", "sys_mmstore", "MMStoreText", "main"),
        Entry("chroma", "sys_chroma", "ChromaText", "peers"),
        Entry("lancedb", "sys_lancedb", "LanceText", "peers"),
    )
}
GROUPS = {
    "mmstore": ["mmstore", "mmstore-flat"],
    "faiss": ["faiss-flat", "faiss-ivf", "faiss-hnsw"],
    "duckdb": ["duckdb-brute", "duckdb-vss"],
    "lancedb": ["lancedb-flat", "lancedb-ivfpq"],
    #: issue 18: the compressed indexes, for a million vectors
    "compressed": [
        "mmstore",
        "mmstore-ivf-sq8",
        "faiss-ivf-sq8",
        "faiss-ivf-sq8-refine",
        "faiss-hnsw-sq",
        "lancedb-ivfpq",
        "lancedb-ivfrq",
    ],
}
#: what ``all`` runs: the issue 7 systems (the compressed ones and Pixeltable are asked by
#: name or group, so that the 100,000-vector run stays what it was)
DEFAULT = [
    *GROUPS["mmstore"],
    *GROUPS["faiss"],
    *GROUPS["duckdb"],
    "chroma",
    *GROUPS["lancedb"],
]


def resolve(spec: str) -> list[str]:
    """System names from a comma-separated list of names and groups, in table order."""
    wanted: set[str] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "all":
            wanted |= set(DEFAULT)
        elif part == "every":
            wanted |= set(SYSTEMS)
        elif part in GROUPS:
            wanted |= set(GROUPS[part])
        elif part in SYSTEMS:
            wanted.add(part)
        else:
            known = sorted([*SYSTEMS, *GROUPS, "all", "every"])
            raise SystemExit(f"unknown system {part!r}; known: {', '.join(known)}")
    return [name for name in SYSTEMS if name in wanted]
