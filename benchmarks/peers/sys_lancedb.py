"""LanceDB, local: one table ``(id, cat, vector)`` created from Arrow, searched with the
``dot`` distance. Flat is the table with no index (every query scans it); the indexed
variants are LanceDB's default vector index, IVF_PQ (its default partitions and
sub-vectors), and IVF_RQ (RaBitQ codes, its defaults), each plus a bitmap index on the
category for filters, with ``nprobes`` and ``refine_factor`` swept to the recall target.
Filters are applied before the vector search (``prefilter=True``)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from peers.protocol import Dataset, System, sweep

NAME = "bench"
COLUMNS = ["id", "cat", "_distance"]


class LanceFlat(System):
    name = "lancedb-flat"
    exact = True
    batch_api = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.table: Any = None

    def ingest(self, data: Dataset) -> None:
        db = lancedb.connect(str(self.folder / "lance"))
        arrow = pa.table(
            {
                "id": pa.array(data.ids()),
                "cat": pa.array(data.cat_names()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.base.ravel()), data.dim),
            }
        )
        self.table = db.create_table(NAME, data=arrow)

    def _query(self, q: Any, k: int) -> Any:
        return self.table.search(q).distance_type("dot").select(COLUMNS).limit(k)

    def search(self, q: np.ndarray, k: int) -> list[str]:
        ids: list[str] = self._query(q, k).to_arrow().column("id").to_pylist()
        return ids

    def search_batch(self, qs: np.ndarray, k: int) -> list[list[str]]:
        table = self._query(list(qs), k).to_arrow()
        out: list[list[str]] = [[] for _ in range(len(qs))]
        for i, rid in zip(
            table.column("query_index").to_pylist(), table.column("id").to_pylist(), strict=True
        ):
            out[i].append(rid)
        return out

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        if not cat.isalnum():
            raise ValueError(f"unexpected category {cat!r}")
        query = self._query(q, k).where(f"cat = '{cat}'", prefilter=True)
        ids: list[str] = query.to_arrow().column("id").to_pylist()
        return ids

    @classmethod
    def reopen(cls, folder: Path, params: dict[str, Any]) -> System:
        system = cls(folder)
        system.table = lancedb.connect(str(folder / "lance")).open_table(NAME)
        system.set_search(params)
        return system

    def set_search(self, params: dict[str, Any]) -> None:
        """Apply tuned search parameters (none without an index)."""

    @staticmethod
    def versions() -> dict[str, str]:
        return {"lancedb": metadata.version("lancedb")}


class LanceIvfPq(LanceFlat):
    name = "lancedb-ivfpq"
    index_type = "IVF_PQ"
    exact = False
    #: (nprobes, refine_factor) from cheapest to dearest
    candidates = tuple(
        (nprobes, refine) for nprobes in (8, 16, 32, 64, 128, 256) for refine in (10, 50)
    )

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.nprobes, self.refine = 20, 10

    def build(self, data: Dataset) -> bool:
        self.table.create_index("vector", config=self._config())
        self.table.create_scalar_index("cat", index_type="BITMAP")
        return True

    def _config(self) -> Any:
        from lancedb.index import IvfPq

        return IvfPq(distance_type="dot")

    def tune(self, data: Dataset, target: float, budget_s: float) -> dict[str, Any]:
        return sweep(self, data, self.candidates, self._set, target, budget_s)

    def _set(self, knobs: tuple[int, int]) -> None:
        self.nprobes, self.refine = knobs

    def _query(self, q: Any, k: int) -> Any:
        return super()._query(q, k).nprobes(self.nprobes).refine_factor(self.refine)

    def params(self) -> dict[str, Any]:
        index = type(self).index_type
        return {"index_type": index, "nprobes": self.nprobes, "refine_factor": self.refine}

    def set_search(self, params: dict[str, Any]) -> None:
        self.nprobes, self.refine = params["nprobes"], params["refine_factor"]


class LanceIvfRq(LanceIvfPq):
    """IVF_RQ: RaBitQ codes (its default 1 bit per dimension) in IVF partitions (its
    defaults), the same sweep of ``nprobes`` and ``refine_factor``."""

    name = "lancedb-ivfrq"
    index_type = "IVF_RQ"

    def _config(self) -> Any:
        from lancedb.index import IvfRq

        return IvfRq(distance_type="dot")


class LanceText:
    """End to end: rows embedded by LanceDB's own sentence-transformers embedding function
    (registry name ``sentence-transformers``) on the bundled model's directory."""

    name = "lancedb"

    def __init__(self, folder: Path, model_path: str) -> None:
        from lancedb.embeddings import get_registry
        from lancedb.pydantic import LanceModel, Vector

        embed = (
            get_registry()
            .get("sentence-transformers")
            .create(name=model_path, device="cpu", normalize=True)
        )

        class Row(LanceModel):
            id: str
            cat: str
            text: str = embed.SourceField()
            vector: Vector(embed.ndims()) = embed.VectorField()  # type: ignore[valid-type]

        db = lancedb.connect(str(folder / "lance-text"))
        self.table = db.create_table("texts", schema=Row)

    def add(self, records: list[dict[str, str]]) -> None:
        self.table.add(records)

    def search(self, text: str) -> list[str]:
        ids: list[str] = (
            (self.table.search(text).select(["id", "_distance"]).limit(10).to_arrow())
            .column("id")
            .to_pylist()
        )
        return ids

    def close(self) -> None:
        """LanceDB's local connection has nothing to close."""
