"""The data sets, written once by the parent for every child to read (:class:`Dataset`):

- ``random``: random normalized 384-d vectors, queries drawn the same way: nothing is
  near anything, the adversarial case for approximate search;
- ``real``: real all-MiniLM-L6-v2 embeddings of docstring paragraphs found on this machine
  (``embed_corpus.py``'s cache), the first ``n`` as the base, the next ones as tuning
  queries and the corpus's last rows (``bench_spine.py``'s held-out queries) as queries;
- the sentences of the first of those records, for end-to-end text ingest.

Each base row ``i`` has id ``v<i>`` and category ``cat<i % 10>``; filtered searches ask for
``cat3`` (10% of the rows). Exact top-10 answers are computed here with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from peers.protocol import K

CATEGORIES = 10
FILTER_CAT = 3


def exact_top(queries: np.ndarray, base: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the exact top-``K`` by inner product (best first), in blocks."""
    rows = np.arange(len(base)) if mask is None else np.flatnonzero(mask)
    sub = base[rows]
    out = np.empty((len(queries), K), np.int64)
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ sub.T
        part = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        out[start : start + 256] = rows[np.take_along_axis(part, order, 1)]
    return out


def write(
    folder: Path,
    name: str,
    base: np.ndarray,
    queries: np.ndarray,
    tune: np.ndarray,
    filtered: int,
    source: str,
) -> dict[str, Any]:
    """Write a data set and its exact answers; return its description."""
    folder.mkdir(parents=True, exist_ok=True)
    cats = (np.arange(len(base)) % CATEGORIES).astype(np.int8)
    arrays = {
        "base": base,
        "cats": cats,
        "queries": queries,
        "tune": tune,
        "truth": exact_top(queries, base),
        "tune_truth": exact_top(tune, base),
        "ftruth": exact_top(queries[:filtered], base, cats == FILTER_CAT),
    }
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", np.ascontiguousarray(value), allow_pickle=False)
    meta = {
        "name": name,
        "vectors": len(base),
        "dim": int(base.shape[1]),
        "queries": len(queries),
        "tune_queries": len(tune),
        "filtered_queries": min(filtered, len(queries)),
        "filter_cat": f"cat{FILTER_CAT}",
        "selectivity": float((cats == FILTER_CAT).mean()),
        "source": source,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def normalized(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def random_set(
    folder: Path, n: int, queries: int, tune: int, filtered: int, dim: int = 384
) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    base = normalized(rng, n, dim)
    return write(
        folder,
        "random",
        base,
        normalized(rng, queries, dim),
        normalized(rng, tune, dim),
        filtered,
        f"{n:,} random normalized {dim}-d vectors (standard normal, seed 7)",
    )


def real_set(
    folder: Path,
    n: int,
    queries: int,
    tune: int,
    filtered: int,
    vectors: np.ndarray,
    origin: str,
) -> dict[str, Any]:
    """The corpus's first ``n`` embeddings, the next ``tune`` as tuning queries, its last
    ``queries`` as queries."""
    if n + tune + queries > len(vectors):
        need = n + tune + queries
        raise SystemExit(f"the corpus has {len(vectors):,} embeddings; {need:,} are needed")
    base = np.ascontiguousarray(vectors[:n], np.float32)
    return write(
        folder,
        "real",
        base,
        np.ascontiguousarray(vectors[len(vectors) - queries :], np.float32),
        np.ascontiguousarray(vectors[n : n + tune], np.float32),
        filtered,
        f"{n:,} all-MiniLM-L6-v2 embeddings of docstring paragraphs (first 16 words) of the "
        f"standard library and installed packages; queries: the last {queries:,} of "
        f"{len(vectors):,} (other paragraphs); {origin}",
    )


def text_set(path: Path, records: list[dict[str, str]], n: int, warm: int) -> int:
    """``warm`` sentences to load the models with, then ``n`` to time; return ``n``."""
    rows = [
        {"id": r["id"], "text": r["text"], "cat": f"cat{i % CATEGORIES}"}
        for i, r in enumerate(records[: n + warm])
    ]
    path.write_text(json.dumps(rows[n:] + rows[:n]))
    return min(n, len(rows) - warm)
