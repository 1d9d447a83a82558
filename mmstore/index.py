"""The vector index of one field: an exact tail that takes new vectors at memory speed and,
once the field is large, an HNSW graph (FAISS) over the rest, with its search width tuned
to a recall target on a held-out sample. Deletes are tombstones until the next compaction.

Positions are in vid order, so a vid maps to its position by binary search.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import faiss as _faiss
import numpy as np

from mmstore.config import IndexOptions

EF_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
#: a filtered search scans the matching rows exactly when there are at most this many
EXACT_SUBSET = 20_000
TUNE_QUERIES = 200
FORMAT = 1
faiss: Any = _faiss  # the SWIG module has no usable type information


@dataclass(frozen=True)
class SearchResult:
    """Scores and vids, ``(m, k)`` each; missing hits have vid -1 and score -inf."""

    scores: np.ndarray
    vids: np.ndarray


class VectorIndex:
    """An in-memory index of one field's vectors; see the module docstring."""

    def __init__(self, dim: int, options: IndexOptions | None = None) -> None:
        self.dim = dim
        self.options = options or IndexOptions()
        self.vids = np.empty(0, np.int64)
        self.dead = np.zeros(0, bool)
        self.hnsw: Any = None  # faiss.IndexHNSWFlat over positions [0, n_base)
        self.ef_search = 64
        self.tuned_recall: float | None = None
        self._tail = np.empty((0, dim), np.float32)
        self._tail_len = 0

    # -- size ---------------------------------------------------------------------------
    @property
    def n_base(self) -> int:
        return 0 if self.hnsw is None else int(self.hnsw.ntotal)

    @property
    def size(self) -> int:
        return len(self.vids)

    @property
    def live(self) -> int:
        return int(self.size - self.dead.sum())

    @property
    def kind(self) -> str:
        return "hnsw" if self.hnsw is not None else "flat"

    @property
    def last_vid(self) -> int:
        return int(self.vids[-1]) if len(self.vids) else 0

    def live_vids(self) -> np.ndarray:
        return self.vids[~self.dead]

    # -- writes -------------------------------------------------------------------------
    def add(self, vids: np.ndarray, vectors: np.ndarray) -> None:
        """Append vectors whose vids are all larger than any already held."""
        vids = np.asarray(vids, np.int64)
        if not len(vids):
            return
        if (len(self.vids) and vids[0] <= self.vids[-1]) or np.any(np.diff(vids) <= 0):
            raise ValueError("vids must be increasing and newer than the index's last vid")
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(len(vids), self.dim)
        need = self._tail_len + len(vids)
        if need > len(self._tail):
            grown = np.empty((max(need, 2 * len(self._tail), 1024), self.dim), np.float32)
            grown[: self._tail_len] = self._tail[: self._tail_len]
            self._tail = grown
        self._tail[self._tail_len : need] = vectors
        self._tail_len = need
        self.vids = np.concatenate([self.vids, vids])
        self.dead = np.concatenate([self.dead, np.zeros(len(vids), bool)])

    def remove(self, vids: np.ndarray) -> int:
        """Tombstone vids (unknown ones are ignored); return how many were live."""
        pos = self.positions(np.asarray(vids, np.int64))
        newly = int((~self.dead[pos]).sum())
        self.dead[pos] = True
        return newly

    def positions(self, vids: np.ndarray) -> np.ndarray:
        """Positions of the given vids that the index holds."""
        pos = np.searchsorted(self.vids, vids)
        ok = pos < len(self.vids)
        ok[ok] = self.vids[pos[ok]] == vids[ok]
        return pos[ok]

    # -- vectors ------------------------------------------------------------------------
    def _base_view(self) -> np.ndarray:
        """The HNSW graph's own vector storage, as a numpy view (no copy)."""
        if self.hnsw is None:
            return np.empty((0, self.dim), np.float32)
        storage = faiss.downcast_index(self.hnsw.storage)
        ptr = faiss.rev_swig_ptr(storage.get_xb(), self.n_base * self.dim)
        return np.asarray(ptr).reshape(self.n_base, self.dim)

    def tail(self) -> np.ndarray:
        return self._tail[: self._tail_len]

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        base = positions < self.n_base
        out = np.empty((len(positions), self.dim), np.float32)
        out[base] = self._base_view()[positions[base]]
        out[~base] = self.tail()[positions[~base] - self.n_base]
        return out

    def all_vectors(self) -> np.ndarray:
        return np.concatenate([self._base_view(), self.tail()]) if self.n_base else self.tail()

    # -- search -------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> SearchResult:
        """Top ``k`` live vectors by inner product; ``allowed`` restricts to vids."""
        queries = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        if allowed is not None:
            pos = self.positions(np.asarray(allowed, np.int64))
            pos = pos[~self.dead[pos]]
            if len(pos) <= EXACT_SUBSET or self.hnsw is None:
                return self._exact(queries, k, pos)
            return self._ann(queries, k, pos)
        if self.hnsw is None:
            return self._exact(queries, k, None)
        return self._ann(queries, k, None)

    def _exact(self, queries: np.ndarray, k: int, positions: np.ndarray | None) -> SearchResult:
        if positions is None:
            scores = np.concatenate([queries @ self._base_view().T, queries @ self.tail().T], 1)
            positions = np.arange(self.size)
            scores[:, self.dead] = -np.inf
        else:
            scores = queries @ self.vectors_at(positions).T
        return self._top(scores, positions, k)

    def _top(self, scores: np.ndarray, positions: np.ndarray, k: int) -> SearchResult:
        m, n = scores.shape
        kk = min(k, n)
        out_s = np.full((m, k), -np.inf, np.float32)
        out_v = np.full((m, k), -1, np.int64)
        if kk:
            part = (
                np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
                if kk < n
                else np.tile(np.arange(n), (m, 1))
            )
            top = np.take_along_axis(scores, part, 1)
            order = np.argsort(-top, axis=1, kind="stable")
            idx = np.take_along_axis(part, order, 1)
            out_s[:, :kk] = np.take_along_axis(top, order, 1)
            out_v[:, :kk] = self.vids[positions[idx]]
            out_v[~np.isfinite(out_s)] = -1
        return SearchResult(out_s, out_v)

    def _ann(self, queries: np.ndarray, k: int, positions: np.ndarray | None) -> SearchResult:
        base_pos = positions[positions < self.n_base] if positions is not None else None
        params, keep = self._hnsw_params(base_pos, k)
        kk = min(k, self.n_base)
        scores, labels = self.hnsw.search(queries, kk, params=params)
        del keep
        tail_pos = np.arange(self.n_base, self.size)
        tail_pos = tail_pos[~self.dead[tail_pos]]
        if positions is not None:
            tail_pos = positions[positions >= self.n_base]
        tail = self._exact(queries, k, tail_pos)
        found = labels >= 0
        base_vids = np.where(found, self.vids[np.maximum(labels, 0)], -1)
        base_scores = np.where(found, scores, -np.inf).astype(np.float32)
        merged_s = np.concatenate([base_scores, tail.scores], 1)
        merged_v = np.concatenate([base_vids, tail.vids], 1)
        order = np.argsort(-merged_s, axis=1, kind="stable")[:, :k]
        result = SearchResult(
            np.take_along_axis(merged_s, order, 1), np.take_along_axis(merged_v, order, 1)
        )
        if positions is not None and (result.vids < 0).any() and len(positions) >= k:
            return self._exact(queries, k, positions)
        return result

    def _hnsw_params(self, base_pos: np.ndarray | None, k: int) -> tuple[Any, Any]:
        """Search parameters with the tuned width; a bitmap selector for filters and
        tombstones (returned too, since FAISS does not own it)."""
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        dead_base = self.dead[: self.n_base]
        if base_pos is None and not dead_base.any():
            return params, None
        mask = ~dead_base if base_pos is None else np.zeros(self.n_base, bool)
        if base_pos is not None:
            mask[base_pos] = True
            selectivity = max(mask.mean(), 1e-3)
            params.efSearch = int(min(4096, max(self.ef_search, k) / min(1.0, selectivity * 4)))
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(self.n_base, faiss.swig_ptr(bitmap))
        params.sel = selector
        return params, (bitmap, selector)

    # -- maintenance --------------------------------------------------------------------
    def needs_optimize(self) -> bool:
        """Whether ``optimize`` would change anything worth the time."""
        big = self.live >= self.options.ann_threshold
        return (big and self._tail_len >= max(1, self.n_base // 10)) or (
            self.size > 0 and self.dead.mean() > 0.2
        )

    def optimize(self) -> None:
        """Compact tombstones; build or extend the HNSW graph once the field is large."""
        if self.dead.any() and (self.dead.mean() > 0.2 or self.live < self.options.ann_threshold):
            self._compact()
        if self.live < self.options.ann_threshold or self._tail_len == 0:
            return
        if self.hnsw is None:
            self.hnsw = faiss.IndexHNSWFlat(
                self.dim, self.options.hnsw_m, faiss.METRIC_INNER_PRODUCT
            )
            self.hnsw.hnsw.efConstruction = self.options.hnsw_ef_construction
        self.hnsw.add(self.tail())
        self._tail = np.empty((0, self.dim), np.float32)
        self._tail_len = 0
        self.tune()

    def _compact(self) -> None:
        keep = ~self.dead
        vectors, vids = self.all_vectors()[keep], self.vids[keep]
        self.__init__(self.dim, self.options)  # type: ignore[misc]
        self.add(vids, vectors)

    def tune(self, seed: int = 0) -> None:
        """Pick the smallest HNSW width reaching the recall target on held-out base vectors
        (each query's own vector excluded from both the truth and the answer)."""
        n = self.n_base
        rng = np.random.default_rng(seed)
        sample = rng.choice(n, size=min(TUNE_QUERIES, n), replace=False)
        base = self._base_view()
        queries = base[sample]
        truth = _exact_ids(queries, base, 11, sample)
        for ef in EF_CANDIDATES:
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            _, labels = self.hnsw.search(queries, 11, params=params)
            recall = _recall(truth, labels, sample)
            if recall >= self.options.target_recall or ef == EF_CANDIDATES[-1]:
                self.ef_search, self.tuned_recall = ef, recall
                return

    def params(self) -> dict[str, Any]:
        """What the manifest records about how this index was built."""
        out: dict[str, Any] = {"kind": self.kind, "size": self.size, "live": self.live}
        if self.hnsw is not None:
            out |= {
                "M": self.options.hnsw_m,
                "efConstruction": self.options.hnsw_ef_construction,
                "efSearch": self.ef_search,
                "tuned_recall@10": self.tuned_recall,
            }
        return out

    # -- persistence --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """One self-describing blob (numpy ``.npz``, no pickle)."""
        meta = {
            "format": FORMAT,
            "dim": self.dim,
            "ef_search": self.ef_search,
            "tuned_recall": self.tuned_recall,
        }
        arrays: dict[str, Any] = {
            "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
            "vids": self.vids,
            "dead": self.dead,
            "tail": self.tail(),
            "hnsw": faiss.serialize_index(self.hnsw)
            if self.hnsw is not None
            else np.empty(0, np.uint8),
        }
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, options: IndexOptions | None = None) -> VectorIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("format") != FORMAT:
                raise ValueError(f"index format {meta.get('format')!r} is not {FORMAT}")
            index = cls(int(meta["dim"]), options)
            index.vids, index.dead = z["vids"].astype(np.int64), z["dead"].astype(bool)
            tail, hnsw = z["tail"], z["hnsw"]
        if len(hnsw):
            index.hnsw = faiss.deserialize_index(hnsw)
        index._tail, index._tail_len = np.ascontiguousarray(tail, np.float32), len(tail)
        index.ef_search, index.tuned_recall = int(meta["ef_search"]), meta["tuned_recall"]
        if index.n_base + index._tail_len != index.size or index._tail.shape[1:] != (index.dim,):
            raise ValueError("index file is inconsistent: vector and id counts differ")
        return index


def _exact_ids(queries: np.ndarray, base: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    scores = queries @ base.T
    scores[np.arange(len(exclude)), exclude] = -np.inf
    return np.argsort(-scores, axis=1)[:, : k - 1]


def _recall(truth: np.ndarray, labels: np.ndarray, exclude: np.ndarray) -> float:
    hits = 0
    for row, t, own in zip(labels, truth, exclude, strict=True):
        got = [x for x in row if x != own][: truth.shape[1]]
        hits += len(set(got) & set(t.tolist()))
    return hits / truth.size
