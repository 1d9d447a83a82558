"""mmstore through its public API: ``mmstore.open``, ``create_collection`` with a
``precomputed`` vector field, ``ingest`` of an Arrow table, ``optimize``, ``col.search``
(``where=`` for filters). Three index choices: the default (exact below 20,000 vectors;
past that the kind that ``mmstore.index.choose`` picks from the size and the memory, tried on
a sample first: HNSW up to 250,000 vectors, IVF-SQ8 with float32 rescoring past it, exact
where the sample misses the recall target; its width tuned at build), flat (exact at every
size) and IVF-SQ8 asked for. ``params`` reports what ``col.info()`` says was chosen and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

import mmstore
from peers.protocol import Dataset, K, System, percentiles, timed_loop

COLLECTION = "bench"


class MMStore(System):
    """The default index choice: ``optimize`` chooses and builds the index once the field
    is large and tunes its search width to recall 0.95 on a held-out sample; nothing to
    tune here."""

    name = "mmstore"
    #: ``index=`` options of ``create_collection``; the defaults
    index: ClassVar[dict[str, Any]] = {}

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.store: Any = None
        self.col: Any = None

    def ingest(self, data: Dataset) -> None:
        table = pa.table(
            {
                "id": pa.array(data.ids()),
                "emb": pa.FixedSizeListArray.from_arrays(pa.array(data.base.ravel()), data.dim),
                "label": pa.array(data.cat_names()),
            }
        )
        self.store = mmstore.open(self.folder / "store")
        field = {"encoder": "precomputed", "modality": "vector", "dim": data.dim}
        self.col = self.store.create_collection(
            COLLECTION, encoders={"emb": field}, index=self.index
        )
        report = self.col.ingest(table)
        if report.written != len(data.base):
            raise RuntimeError(f"mmstore wrote {report.written} of {len(data.base)} records")

    def build(self, data: Dataset) -> bool:
        self.col.optimize()  # builds HNSW where due, then saves the index file
        return True

    def search(self, q: np.ndarray, k: int) -> list[str]:
        ids: list[str] = self.col.search(vector=q, k=k).ids
        return ids

    batch_api = True

    def search_batch(self, qs: np.ndarray, k: int) -> list[list[str]]:
        return [hits.ids for hits in self.col.search_many(qs, k=k)]

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        ids: list[str] = self.col.search(vector=q, k=k, where={"label": cat}).ids
        return ids

    def extra(self, data: Dataset, budget_s: float) -> dict[str, Any]:
        """Where the time of a search goes, through internals that no user calls: the
        field's index alone (vids, no hits), and the filter's catalog lookup of the
        matching records' vids (kept between writes, so it is timed with the kept answer
        dropped first: what the first search with a filter pays)."""
        field = self.col.active["emb"]
        index = self.col.indexes.get(field)
        where = {"label": data.filter_cat}

        def ids_of(q: np.ndarray) -> list[str]:
            return [str(v) for v in index.search(q[None, :], K).vids[0]]

        def lookup(q: np.ndarray) -> list[str]:
            self.col.searcher.allowed_vids.forget()  # the first search with this filter
            self.col.searcher.allowed_vids(field, where)
            return []

        alone, _ = timed_loop(ids_of, data.queries, budget_s)
        filters, _ = timed_loop(lookup, data.queries[: len(data.ftruth)], budget_s)
        return {"index_alone": percentiles(alone), "filter_lookup": percentiles(filters)}

    def params(self) -> dict[str, Any]:
        index = dict(self.col.info()["fields"][0]["index"])
        index.pop("index_file_bytes", None)
        return {"index": index, "options": self.index}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    @classmethod
    def reopen(cls, folder: Path, params: dict[str, Any]) -> System:
        system = cls(folder)
        system.store = mmstore.open(folder / "store")
        system.col = system.store.collection(COLLECTION)
        return system

    @staticmethod
    def versions() -> dict[str, str]:
        return {"mmstore": mmstore.__version__}


class MMStoreFlat(MMStore):
    """The exact index at every size (``ann_threshold`` above the data set's size)."""

    name = "mmstore-flat"
    exact = True
    index: ClassVar[dict[str, Any]] = {"ann_threshold": 1_000_000_000}


class MMStoreText:
    """End to end: raw sentences into a text field encoded by the bundled all-MiniLM-L6-v2
    (the ``sentence_transformers`` encoder's defaults: that model, batch 32)."""

    name = "mmstore"

    def __init__(self, folder: Path, model_path: str) -> None:
        self.store = mmstore.open(folder / "text-store")
        self.col = self.store.create_collection("texts", encoders={"text": "sentence_transformers"})

    def add(self, records: list[dict[str, str]]) -> None:
        self.col.ingest([{"id": r["id"], "text": r["text"], "label": r["cat"]} for r in records])

    def search(self, text: str) -> list[str]:
        ids: list[str] = self.col.search(text=text, k=10).ids
        return ids

    def close(self) -> None:
        self.store.close()


class MMStoreIVFSQ8(MMStore):
    """IVF-SQ8 asked for (``kind="ivf_sq8"``): 8-bit codes, every search rescored from
    float32, lists probed and candidates rescored tuned at build, whatever the chooser
    would have picked (on random vectors the default may stay exact)."""

    name = "mmstore-ivf-sq8"
    index: ClassVar[dict[str, Any]] = {"kind": "ivf_sq8"}
