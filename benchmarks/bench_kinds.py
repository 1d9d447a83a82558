"""Each index kind against raw FAISS on the same index, in the same run: single-query p50
of ``col.search`` and of FAISS alone (interleaved), a batch of 1,000 queries through
``col.search_many`` against one FAISS batch call, filtered search at 10% selectivity
(``where={"label": "3"}`` of 10 labels) with its recall against an exact filtered scan,
and recall@10 unfiltered.

Raw FAISS is the index's own FAISS object with the tuned width: for ``hnsw`` the graph
at its ``efSearch``; for the IVF kinds ``faiss.IndexRefine`` over the same codes and the
same float32 vectors (FAISS's own rescoring) at the tuned ``nprobe`` and refine factor;
for ``flat`` an ``IndexFlatIP`` of the same vectors.

    .venv/bin/python benchmarks/bench_kinds.py [--n 100000] [--data mixture|random]
        [--kinds flat,hnsw,ivf_sq8,ivf_rabitq] [--threshold 20000]
        [--out benchmarks/out/kinds.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import DIM, arrow_table, mixture

import mmstore
from mmstore.index.backend import faiss

K, SINGLE, BATCH, FILTERED = 10, 300, 1_000, 200


def main() -> int:
    args = parse_args()
    data, queries = dataset(args.n, args.data)
    load = os.getloadavg()
    rows = [run_kind(kind, data, queries, args.threshold) for kind in args.kinds.split(",")]
    report = {"n": args.n, "data": args.data, "load_before": load, "load_after": os.getloadavg()}
    report["rows"] = rows
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--data", choices=("mixture", "random"), default="mixture")
    parser.add_argument("--kinds", default="flat,hnsw,ivf_sq8,ivf_rabitq")
    parser.add_argument("--threshold", type=int, default=20_000, help="ann_threshold")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/kinds.json"))
    return parser.parse_args()


def dataset(n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "mixture":
        return mixture(n, seed=1), mixture(BATCH, seed=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n + BATCH, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def run_kind(kind: str, data: np.ndarray, queries: np.ndarray, threshold: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, mmstore.open(Path(tmp) / "s") as store:
        spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}
        col = store.create_collection(
            "v", encoders=spec, index={"kind": kind, "ann_threshold": threshold}
        )
        col.ingest(arrow_table(data), chunk_size=65_536)
        t0 = time.perf_counter()
        col.optimize()
        row: dict[str, Any] = {"kind": kind, "optimize_s": time.perf_counter() - t0}
        index = col.indexes.get(col.fields["e"])
        raw = raw_search(index, data)
        row |= single(col, raw, queries[:SINGLE], data)
        row |= batch(col, raw, queries)
        row |= filtered(col, queries[:FILTERED], data)
        row["index"] = col.info()["fields"][0]["index"]
    print(f"{kind}: done", flush=True)
    return row


def raw_search(index: Any, data: np.ndarray) -> Any:
    """FAISS alone on the same index with the same width: ``f(queries) -> labels``."""
    ann = index.ann
    if ann is None:
        flat = faiss.IndexFlatIP(DIM)
        flat.add(data)
        return lambda q: flat.search(q, K)[1]
    if ann.kind == "hnsw":
        params = faiss.SearchParametersHNSW()
        params.efSearch = ann.width
        return lambda q: ann.index.search(q, K, params=params)[1]
    flat = faiss.IndexFlatIP(DIM)
    flat.add(np.ascontiguousarray(ann.floats()))
    refine = faiss.IndexRefine(ann.index, flat)
    if ann.kind == "ivf_rabitq":
        params = faiss.IVFRaBitQSearchParameters()
        params.qb = 8
    else:
        params = faiss.SearchParametersIVF()
    params.nprobe = ann.width
    quantizer = faiss.SearchParametersHNSW()
    quantizer.efSearch = max(64, 2 * ann.width)
    params.quantizer_params = quantizer
    outer = faiss.IndexRefineSearchParameters(k_factor=float(ann.refine), base_index_params=params)
    keep = (flat, refine, params, quantizer, outer)  # SWIG objects must outlive the calls
    return lambda q, keep=keep: keep[1].search(q, K, params=keep[4])[1]


def single(col: Any, raw: Any, queries: np.ndarray, data: np.ndarray) -> dict[str, Any]:
    runs = {"raw": lambda q: raw(q[None, :]), "api": lambda q: col.search(vector=q, k=K)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    got = []
    for i, q in enumerate(queries):
        for name in list(runs)[i % 2 :] + list(runs)[: i % 2]:  # each goes first half the time
            t0 = time.perf_counter()
            out = runs[name](q)
            times[name].append(time.perf_counter() - t0)
            if name == "api":
                got.append([int(h) - 1 for h in out.ids])
    truth = exact(data, queries)
    p50 = {name: float(np.median(t) * 1000) for name, t in times.items()}
    return {
        "p50_ms": p50["api"],
        "raw_p50_ms": p50["raw"],
        "p50_vs_raw": p50["api"] / p50["raw"],
        "recall_at_10": recall(truth, got),
    }


def batch(col: Any, raw: Any, queries: np.ndarray) -> dict[str, Any]:
    api, base = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        col.search_many(queries, k=K)
        api.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        raw(queries)
        base.append(time.perf_counter() - t0)
    qps, raw_qps = len(queries) / np.median(api), len(queries) / np.median(base)
    return {"batch_qps": float(qps), "raw_batch_qps": float(raw_qps), "batch_vs_raw": qps / raw_qps}


def filtered(col: Any, queries: np.ndarray, data: np.ndarray) -> dict[str, Any]:
    rows = np.flatnonzero(np.arange(len(data)) % 10 == 3)
    times, got = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = col.search(vector=q, k=K, where={"label": "3"})
        times.append(time.perf_counter() - t0)
        got.append([int(h) - 1 for h in hits.ids])
    truth = rows[exact(data[rows], queries)]
    return {
        "filtered_p50_ms": float(np.median(times) * 1000),
        "filtered_recall": recall(truth, got),
    }


def exact(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ data.T), axis=1)[:, :K]


def recall(truth: np.ndarray, got: list[list[int]]) -> float:
    return float(
        np.mean([len(set(t) & set(g)) / K for t, g in zip(truth.tolist(), got, strict=True)])
    )


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['n']:,} x {DIM} {report['data']} vectors; load average before "
          f"{report['load_before']}, after {report['load_after']}")  # fmt: skip
    head = ("kind", "optimize s", "p50 ms", "raw p50 ms", "p50 / raw", "recall@10", "batch q/s",
            "raw batch q/s", "batch / raw", "filtered p50 ms", "filtered recall")  # fmt: skip
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in report["rows"]:
        cells = (
            r["kind"], f"{r['optimize_s']:.1f}", f"{r['p50_ms']:.3f}", f"{r['raw_p50_ms']:.3f}",
            f"{r['p50_vs_raw']:.2f}x", f"{r['recall_at_10']:.3f}", f"{r['batch_qps']:,.0f}",
            f"{r['raw_batch_qps']:,.0f}", f"{r['batch_vs_raw']:.2f}x",
            f"{r['filtered_p50_ms']:.3f}", f"{r['filtered_recall']:.3f}",
        )  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
