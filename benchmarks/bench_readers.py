"""Reader threads against one writer in the same process: search throughput and latency of
R reader threads alone, then while the main thread ingests calls of 20,000 vectors, then
alone again (the store as the writes left it), in one run.

    .venv/bin/python benchmarks/bench_readers.py --vectors 100000 --readers 4,10

Data: ``--data mixture`` (default; the Gaussian mixture of bench_scaling.py, on which the
default index is a tuned HNSW graph) or ``random`` (unit Gaussian vectors, on which HNSW
tuning misses its recall target and searches are exact scans). Each phase runs
``--seconds``; readers search single queries (k=10) of the same distribution with no
pause.
The ratio the issue asks for is readers-while-writing over readers alone, against the
alone phase before the writes and the one after them (the field then holds the written
vectors too, in the exact tail until the next optimize).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import mmstore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import mixture

DIM, K, CALL = 384, 10, 20_000
OUT = Path(__file__).parent / "out"


def table(x: np.ndarray, start: int) -> pa.Table:
    ids = [f"r{i}" for i in range(start, start + len(x))]
    return pa.table({"id": ids, "e": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)})


def points(data: str, n: int, seed: int) -> np.ndarray:
    """``n`` unit vectors of the ``--data`` distribution."""
    if data == "mixture":
        return mixture(n, seed)
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def readers(
    col: Any, n: int, stop: threading.Event, queries: np.ndarray
) -> tuple[list[threading.Thread], list[list[float]]]:
    """``n`` reader threads, started, searching until ``stop``; and each one's latencies
    (s), filled as they run."""
    out: list[list[float]] = [[] for _ in range(n)]

    def run(i: int) -> None:
        q = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            col.search(vector=queries[q % len(queries)], k=K)
            out[i].append(time.perf_counter() - t0)
            q += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, out


def phase(
    col: Any, n: int, seconds: float, queries: np.ndarray, write: Any = None
) -> dict[str, float]:
    stop = threading.Event()
    threads, lat = readers(col, n, stop, queries)
    t0 = time.perf_counter()
    written = 0
    while time.perf_counter() - t0 < seconds:
        if write is None:
            time.sleep(0.05)
        else:
            written += write()
    wall = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    every = np.array([x for one in lat for x in one]) * 1000
    return {
        "searches_per_s": len(every) / wall,
        "p50_ms": float(np.percentile(every, 50)),
        "p99_ms": float(np.percentile(every, 99)),
        "max_ms": float(every.max()),
        "written_per_s": written / wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--readers", default="4,10")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--data", choices=("mixture", "random"), default="mixture")
    p.add_argument("--out", type=Path, default=OUT / "readers.json")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.readers.split(",")]:
            rows.append(run_readers(Path(tmp) / f"s{n}", n, args))
    report = {"load_before": load, "load_after": os.getloadavg(), "rows": rows}
    print_report(report, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


def run_readers(path: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    with mmstore.open(path) as store:
        spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}
        col = store.create_collection("v", encoders=spec)
        col.ingest(table(points(args.data, args.vectors, 1), 0), chunk_size=65_536)
        col.optimize()
        index = col.info()["fields"][0]["index"]
        queries = points(args.data, 256, 2)
        next_id = [args.vectors]

        def write() -> int:
            seed = 3 + next_id[0] // CALL
            col.ingest(table(points(args.data, CALL, seed), next_id[0]), chunk_size=CALL)
            next_id[0] += CALL
            return CALL

        before = phase(col, n, args.seconds, queries)
        during = phase(col, n, args.seconds, queries, write)
        after = phase(col, n, args.seconds, queries)
    kind = f"{index['kind']}, {index.get('search', 'ann')}"
    return {"readers": n, "kind": kind, "before": before, "during": during, "after": after}


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    py = sys.version.split()[0]
    print(f"{args.vectors:,} x {DIM} {args.data} vectors, ingest calls of {CALL:,}; python {py}")
    print("index: " + "; ".join(f"{r['readers']} readers: {r['kind']}" for r in report["rows"]))
    print(f"load average before {report['load_before']}, after {report['load_after']}")
    print("| readers | phase | searches/s | p50 ms | p99 ms | slowest ms | written vec/s "
          "| vs alone before | vs alone after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        for name in ("before", "during", "after"):
            f = r[name]
            rb = f["searches_per_s"] / r["before"]["searches_per_s"]
            ra = f["searches_per_s"] / r["after"]["searches_per_s"]
            print(
                f"| {r['readers']} | {name} | {f['searches_per_s']:,.0f} | {f['p50_ms']:.2f} | "
                f"{f['p99_ms']:.2f} | {f['max_ms']:.1f} | {f['written_per_s']:,.0f} | "
                f"{rb:.2f}x | {ra:.2f}x |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
