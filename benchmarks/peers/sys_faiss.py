"""Raw FAISS, as a user who keeps ids and categories in numpy arrays beside the index
would use it: flat (exact), IVF-Flat and HNSW, inner product, files written with
``write_index`` and read back with ``read_index``. A filter is a bitmap selector over the
rows whose category matches, computed per query from the category array."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from peers.protocol import EF_CANDIDATES, HNSW_EF_CONSTRUCTION, HNSW_M, Dataset, System, sweep

faiss: Any = _faiss  # the SWIG module has no usable type information
NPROBE_CANDIDATES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class FaissFlat(System):
    """``IndexFlatIP``: exact; ingest is ``add`` plus writing the index and the arrays."""

    name = "faiss-flat"
    exact = True
    batch_api = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.index: Any = None
        self.ids = np.empty(0, object)
        self.cats = np.empty(0, np.int8)
        self.cat_of: dict[str, int] = {}

    def ingest(self, data: Dataset) -> None:
        self._save_columns(data)
        self.index = faiss.IndexFlatIP(data.dim)
        self.index.add(data.base)
        faiss.write_index(self.index, str(self.folder / "index.faiss"))

    def _save_columns(self, data: Dataset) -> None:
        self.ids = np.array(data.ids(), dtype=object)
        self.cats = data.cats.astype(np.int8)
        self.cat_of = {f"cat{c}": c for c in range(int(self.cats.max()) + 1)}
        np.save(self.folder / "ids.npy", self.ids.astype(str), allow_pickle=False)
        np.save(self.folder / "cats.npy", self.cats, allow_pickle=False)

    def _params(self) -> Any:
        return faiss.SearchParameters()

    def _ids(self, labels: np.ndarray) -> list[str]:
        return [str(self.ids[i]) for i in labels if i >= 0]

    def search(self, q: np.ndarray, k: int) -> list[str]:
        _, labels = self.index.search(q[None, :], k, params=self._params())
        return self._ids(labels[0])

    def search_batch(self, qs: np.ndarray, k: int) -> list[list[str]]:
        _, labels = self.index.search(qs, k, params=self._params())
        return [self._ids(row) for row in labels]

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        mask = np.packbits(self.cats == self.cat_of[cat], bitorder="little")
        selector = faiss.IDSelectorBitmap(len(self.cats), faiss.swig_ptr(mask))
        params = self._params()
        params.sel = selector
        _, labels = self.index.search(q[None, :], k, params=params)
        return self._ids(labels[0])

    @classmethod
    def reopen(cls, folder: Path, params: dict[str, Any]) -> System:
        system = cls(folder)
        system.index = faiss.read_index(str(folder / "index.faiss"))
        system.ids = np.load(folder / "ids.npy", allow_pickle=False).astype(object)
        system.cats = np.load(folder / "cats.npy", allow_pickle=False)
        system.cat_of = {f"cat{c}": c for c in range(int(system.cats.max()) + 1)}
        system.set_search(params)
        return system

    def set_search(self, params: dict[str, Any]) -> None:
        """Apply the tuned search parameters (none for the flat index)."""

    @staticmethod
    def versions() -> dict[str, str]:
        return {"faiss": faiss.__version__}


class FaissHNSW(FaissFlat):
    """``IndexHNSWFlat`` (M 32, efConstruction 80, as mmstore's default), efSearch swept
    to the recall target on the tuning queries. Ingest writes the vectors and arrays;
    the build is the graph."""

    name = "faiss-hnsw"
    exact = False

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.knob = 64
        self.candidates: tuple[Any, ...] = EF_CANDIDATES

    def ingest(self, data: Dataset) -> None:
        self._save_columns(data)
        np.save(self.folder / "vectors.npy", data.base, allow_pickle=False)

    def _new_index(self, data: Dataset) -> Any:
        index = faiss.IndexHNSWFlat(data.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index

    def build(self, data: Dataset) -> bool:
        self.index = self._new_index(data)
        if not self.index.is_trained:
            self.index.train(data.base)
        self.index.add(data.base)
        faiss.write_index(self.index, str(self.folder / "index.faiss"))
        return True

    def tune(self, data: Dataset, target: float, budget_s: float) -> dict[str, Any]:
        return sweep(self, data, self.candidates, self._set_knob, target, budget_s)

    def _set_knob(self, value: int) -> None:
        self.knob = value

    def _params(self) -> Any:
        params = faiss.SearchParametersHNSW()
        params.efSearch = self.knob
        return params

    def params(self) -> dict[str, Any]:
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": self.knob}

    def set_search(self, params: dict[str, Any]) -> None:
        self.knob = params["efSearch"]


class FaissIVF(FaissHNSW):
    """``IndexIVFFlat`` with sqrt(n) lists trained on the data (k-means), nprobe swept
    to the recall target."""

    name = "faiss-ivf"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.nlist = 0

    def _new_index(self, data: Dataset) -> Any:
        self.nlist = max(1, int(math.sqrt(len(data.base))))
        smaller = [p for p in NPROBE_CANDIDATES if p < self.nlist]
        self.candidates = (*smaller, self.nlist)
        quantizer = faiss.IndexFlatIP(data.dim)
        return faiss.IndexIVFFlat(quantizer, data.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)

    def _params(self) -> Any:
        params = faiss.SearchParametersIVF()
        params.nprobe = self.knob
        return params

    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.knob}

    def set_search(self, params: dict[str, Any]) -> None:
        self.knob, self.nlist = params["nprobe"], params["nlist"]


#: nprobe for the compressed IVF indexes: past 256 too, since random vectors at a million
#: (1,000 lists) need most of the lists probed
NPROBE_WIDE = (*NPROBE_CANDIDATES, 384, 512, 768)
#: candidates per hit fetched from the 8-bit codes and rescored from float32, as mmstore's
#: IVF-SQ8 tries them (``mmstore.index.coarse.REFINES``)
K_FACTORS = (2, 4)


class FaissIVFSQ8(FaissIVF):
    """``IndexIVFScalarQuantizer`` (8-bit codes, ``QT_8bit``), sqrt(n) lists over a flat
    quantizer trained by k-means on the data, inner product; nprobe swept. Scores come
    from the codes (no float32 rescoring)."""

    name = "faiss-ivf-sq8"

    def _new_index(self, data: Dataset) -> Any:
        self.nlist = max(1, int(math.sqrt(len(data.base))))
        self.candidates = (*[p for p in NPROBE_WIDE if p < self.nlist], self.nlist)
        quantizer = faiss.IndexFlatIP(data.dim)
        qt = faiss.ScalarQuantizer.QT_8bit
        ip = faiss.METRIC_INNER_PRODUCT
        return faiss.IndexIVFScalarQuantizer(quantizer, data.dim, self.nlist, qt, ip)

    def params(self) -> dict[str, Any]:
        return {"codes": "SQ8", "nlist": self.nlist, "nprobe": self.knob}


class FaissIVFSQ8Refine(FaissIVFSQ8):
    """The same IVF-SQ8 index under ``IndexRefineFlat``: ``k_factor·k`` candidates from the
    codes rescored from the float32 vectors it keeps (as mmstore's IVF-SQ8 rescores);
    (nprobe, k_factor) swept, k_factor 2 and 4 at each nprobe."""

    name = "faiss-ivf-sq8-refine"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.k_factor = K_FACTORS[-1]

    def _new_index(self, data: Dataset) -> Any:
        self.base_index = super()._new_index(data)
        self.candidates = tuple((p, f) for p in self.candidates for f in K_FACTORS)
        return faiss.IndexRefineFlat(self.base_index)

    def build(self, data: Dataset) -> bool:
        self.index = self._new_index(data)
        self.index.train(data.base)  # trains the IVF-SQ8 base index
        self.index.add(data.base)  # codes in the base, float32 in the refine index
        faiss.write_index(self.index, str(self.folder / "index.faiss"))
        return True

    def _set_knob(self, value: Any) -> None:
        self.knob, self.k_factor = value

    def _params(self) -> Any:
        base = faiss.SearchParametersIVF()
        base.nprobe = self.knob
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = self.k_factor
        params.base_index_params = base
        self._base_params = base  # SWIG keeps no reference of its own
        return params

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        mask = np.packbits(self.cats == self.cat_of[cat], bitorder="little")
        selector = faiss.IDSelectorBitmap(len(self.cats), faiss.swig_ptr(mask))
        params = self._params()
        self._base_params.sel = selector  # the base index picks the candidates
        _, labels = self.index.search(q[None, :], k, params=params)
        return self._ids(labels[0])

    def params(self) -> dict[str, Any]:
        return {
            "codes": "SQ8, float32 refine",
            "nlist": self.nlist,
            "nprobe": self.knob,
            "k_factor": self.k_factor,
        }

    def set_search(self, params: dict[str, Any]) -> None:
        super().set_search(params)
        self.k_factor = params["k_factor"]


class FaissHNSWSQ(FaissHNSW):
    """``IndexHNSWSQ``: the HNSW graph (M 32, efConstruction 80) over 8-bit scalar codes
    (``QT_8bit``, trained on the data), inner product; efSearch swept. Scores come from
    the codes."""

    name = "faiss-hnsw-sq"

    def _new_index(self, data: Dataset) -> Any:
        qt = faiss.ScalarQuantizer.QT_8bit
        index = faiss.IndexHNSWSQ(data.dim, qt, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index

    def params(self) -> dict[str, Any]:
        return {"codes": "SQ8", **super().params()}
