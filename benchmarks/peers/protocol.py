"""What every system's child process measures, the same way for each: the data set as the
parent wrote it, the adapter interface a system implements, and the measuring loops.

Imports numpy only, so that it runs in the main environment and in the peers' one.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

K = 10
#: every HNSW graph is built alike (mmstore's defaults), so widths compare on like graphs
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: the search widths swept to reach the recall target, the same for every system
EF_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass
class Dataset:
    """One data set as the parent wrote it (:mod:`peers.datasets`): base vectors with ids
    ``v<i>`` and a category ``cat<c>`` each, evaluation and tuning queries, and the exact
    top-10 base rows of each query, unfiltered and restricted to one category."""

    name: str
    base: np.ndarray
    cats: np.ndarray
    queries: np.ndarray
    tune: np.ndarray
    truth: np.ndarray
    tune_truth: np.ndarray
    ftruth: np.ndarray
    filter_cat: str

    @classmethod
    def load(cls, folder: Path) -> Dataset:
        meta = json.loads((folder / "meta.json").read_text())

        def arr(name: str) -> np.ndarray:
            return np.load(folder / f"{name}.npy", allow_pickle=False)

        return cls(
            meta["name"],
            arr("base"),
            arr("cats"),
            arr("queries"),
            arr("tune"),
            arr("truth"),
            arr("tune_truth"),
            arr("ftruth"),
            meta["filter_cat"],
        )

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def ids(self) -> list[str]:
        return [f"v{i}" for i in range(len(self.base))]

    def cat_names(self) -> list[str]:
        return [f"cat{c}" for c in self.cats.tolist()]


class System:
    """A system under test, driven through its public API. Subclasses set ``name`` and
    implement the hooks; ``build`` and ``tune`` are no-ops where a system has no such
    step. ``reopen`` runs in a fresh process with the parameters that ``params`` gave."""

    name: ClassVar[str]
    #: whether search is exact by construction (its recall must be 1.0)
    exact: ClassVar[bool] = False
    #: whether ``search_batch`` is one call of the system, not a loop of single queries
    batch_api: ClassVar[bool] = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def ingest(self, data: Dataset) -> None:
        raise NotImplementedError

    def build(self, data: Dataset) -> bool:
        """Build an index after ingest; return whether there was such a step."""
        return False

    def tune(self, data: Dataset, target: float, budget_s: float) -> dict[str, Any]:
        """Set search parameters to reach ``target`` recall@10 on ``data.tune``."""
        return {}

    def search(self, q: np.ndarray, k: int) -> list[str]:
        raise NotImplementedError

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        raise NotImplementedError

    def search_batch(self, qs: np.ndarray, k: int) -> list[list[str]]:
        return [self.search(q, k) for q in qs]

    def extra(self, data: Dataset, budget_s: float) -> dict[str, Any]:
        """System-specific figures that explain the others (none by default)."""
        return {}

    def params(self) -> dict[str, Any]:
        """Index and search parameters, enough for ``reopen`` to search the same way."""
        return {}

    def close(self) -> None:
        """Release the system's handles (nothing by default)."""

    @classmethod
    def reopen(cls, folder: Path, params: dict[str, Any]) -> System:
        raise NotImplementedError

    @staticmethod
    def versions() -> dict[str, str]:
        return {}


def recall(got: Sequence[Sequence[str]], truth: np.ndarray) -> float:
    """Mean fraction of the exact top-10 found; a short result counts its gaps as misses."""
    if not len(got):
        return float("nan")
    hits = 0
    for ids, row in zip(got, truth, strict=False):
        hits += len({f"v{i}" for i in row.tolist()} & set(ids))
    return hits / (len(got) * truth.shape[1])


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def timed_loop(
    fn: Callable[[np.ndarray], list[str]], queries: np.ndarray, budget_s: float
) -> tuple[list[float], list[list[str]]]:
    """Run ``fn`` on each query until the queries or the time budget run out (at least
    20 queries); return each call's seconds and results."""
    times: list[float] = []
    results: list[list[str]] = []
    stop = time.perf_counter() + budget_s
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t0)
        if len(times) >= 20 and time.perf_counter() > stop:
            break
    return times, results


def sweep(
    system: System,
    data: Dataset,
    candidates: Sequence[Any],
    apply: Callable[[Any], None],
    target: float,
    budget_s: float,
) -> dict[str, Any]:
    """Try search parameters from cheapest to dearest on the tuning queries; keep the
    first whose recall@10 reaches ``target`` (else the last one tried). Every step is
    recorded with its recall and mean latency."""
    rows: list[dict[str, Any]] = []
    stop = time.perf_counter() + budget_s
    for c in candidates:
        apply(c)
        t0 = time.perf_counter()
        got = [system.search(q, K) for q in data.tune]
        ms = (time.perf_counter() - t0) * 1000 / max(1, len(data.tune))
        rows.append({"param": c, "recall": recall(got, data.tune_truth), "mean_ms": ms})
        if rows[-1]["recall"] >= target or time.perf_counter() > stop:
            break
    best = rows[-1]
    apply(best["param"])
    return {
        "chosen": best["param"],
        "tune_recall": best["recall"],
        "reached": best["recall"] >= target,
        "sweep": rows,
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size: ``VmHWM``, which starts afresh at ``exec``
    (``ru_maxrss`` keeps the parent's peak across fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
