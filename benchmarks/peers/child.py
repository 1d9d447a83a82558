"""One system in its own process (so that its memory is its own), in one of three phases:

- ``run``: ingest, build, tune, then single-query latency and recall, batch throughput and
  filtered search, then peak RSS; figures are written to ``--out`` after every phase, so a
  run cut short by its deadline still reports what it finished;
- ``reopen``: open what ``run`` left on disk and answer one query (timed from after the
  imports), and the RSS of a process that only serves;
- ``text``: end-to-end ingest of raw sentences with the system's own sentence-transformers
  embedding, beside raw ``SentenceTransformer.encode`` of the same texts in this process.

Run by :mod:`peers.runner` as ``python -m peers.child`` with ``benchmarks/`` on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from peers.protocol import Dataset, K, peak_rss_mb, percentiles, recall, timed_loop
from peers.registry import SYSTEMS, TEXT


def write(out: Path, result: dict[str, Any]) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


def say(name: str, text: str) -> None:
    print(f"  [{name}] {text}", flush=True)


def run(args: argparse.Namespace) -> None:
    cls = SYSTEMS[args.system].load()
    result: dict[str, Any] = {"system": cls.name, "versions": cls.versions(), "exact": cls.exact}
    data = Dataset.load(args.data)
    system = cls(args.work)
    n = len(data.base)

    def phase(key: str, value: Any) -> None:
        result[key] = value
        write(args.out, result)

    t0 = time.perf_counter()
    system.ingest(data)
    ingest_s = time.perf_counter() - t0
    phase("ingest", {"s": ingest_s, "vectors_per_s": n / ingest_s})
    say(cls.name, f"ingest {n:,} vectors: {n / ingest_s:,.0f}/s")
    t0 = time.perf_counter()
    built = system.build(data)
    phase("build_s", time.perf_counter() - t0 if built else None)
    t0 = time.perf_counter()
    tuned = system.tune(data, args.target, args.tune_budget)
    phase("tune", tuned | {"s": time.perf_counter() - t0})
    seconds = measure_search(system, data, args.budget, phase)
    found = result["search"]
    say(cls.name, f"p50 {found['p50_ms']:.3f} ms, recall {found['recall']:.3f}")
    measure_batch(system, data, seconds, phase)
    measure_filtered(system, data, args.budget, phase)
    phase("extra", system.extra(data, args.budget))
    phase("params", system.params())
    phase("peak_rss_mb", peak_rss_mb())
    system.close()
    phase("done", True)


def measure_search(system: Any, data: Dataset, budget: float, phase: Any) -> list[float]:
    """Single-query latency and recall; returns each query's seconds."""
    for q in data.queries[:5]:
        system.search(q, K)
    times, got = timed_loop(lambda q: system.search(q, K), data.queries, budget)
    phase(
        "search",
        {"queries": len(times), **percentiles(times), "recall": recall(got, data.truth)},
    )
    return times


def measure_batch(system: Any, data: Dataset, single: list[float], phase: Any) -> None:
    """All queries in one call where the system has a batch API; else the throughput of
    the single-query loop just measured (a user's loop would run the same calls)."""
    if not system.batch_api:
        phase("batch", {"queries": len(single), "qps": len(single) / sum(single), "api": False})
        return
    t0 = time.perf_counter()
    got = system.search_batch(data.queries, K)
    s = time.perf_counter() - t0
    phase(
        "batch",
        {"queries": len(got), "qps": len(got) / s, "api": True, "recall": recall(got, data.truth)},
    )


def measure_filtered(system: Any, data: Dataset, budget: float, phase: Any) -> None:
    queries = data.queries[: len(data.ftruth)]
    system.search_filtered(queries[0], K, data.filter_cat)
    times, got = timed_loop(
        lambda q: system.search_filtered(q, K, data.filter_cat), queries, budget
    )
    phase(
        "filtered",
        {"queries": len(times), **percentiles(times), "recall": recall(got, data.ftruth)},
    )


def reopen(args: argparse.Namespace) -> None:
    cls = SYSTEMS[args.system].load()
    q = np.load(args.data / "queries.npy", mmap_mode="r")[0].copy()
    truth = np.load(args.data / "truth.npy")[:1]
    t0 = time.perf_counter()
    system = cls.reopen(args.work, json.loads(args.params))
    t1 = time.perf_counter()
    ids = system.search(q, K)
    t2 = time.perf_counter()
    rss = peak_rss_mb()
    system.close()
    write(
        args.out,
        {
            "s": t2 - t0,
            "open_s": t1 - t0,
            "first_search_s": t2 - t1,
            "recall_first": recall([ids], truth),
            "rss_mb": rss,
        },
    )


def text(args: argparse.Namespace) -> None:
    """Chunk by chunk, the system's ingest and raw ``encode`` (sentence-transformers'
    defaults, as a user calls it) take turns going first; the ratio is the median of the
    per-chunk ratios, so that a load that comes and goes on a shared machine hits both."""
    import torch
    from sentence_transformers import SentenceTransformer

    records = json.loads(args.texts.read_text())
    warm, records = records[: args.warm], records[args.warm :]
    model = SentenceTransformer(args.model, device="cpu")
    model.encode([r["text"] for r in warm])
    system = TEXT[args.system].load()(args.work, args.model)
    system.add(warm)  # the system loads its model on its first batch
    raw_s, ingest_s, ratios = 0.0, 0.0, []
    for i in range(0, len(records), args.chunk):
        chunk = records[i : i + args.chunk]
        timings = {}
        for step in ("raw", "system") if i // args.chunk % 2 == 0 else ("system", "raw"):
            t0 = time.perf_counter()
            if step == "raw":
                model.encode([r["text"] for r in chunk], normalize_embeddings=True)
            else:
                system.add(chunk)
            timings[step] = time.perf_counter() - t0
        raw_s, ingest_s = raw_s + timings["raw"], ingest_s + timings["system"]
        ratios.append(timings["raw"] / timings["system"])
    top = system.search(records[0]["text"])
    system.close()
    n = len(records)
    write(
        args.out,
        {
            "texts": n,
            "chunk": args.chunk,
            "texts_per_s": n / ingest_s,
            "raw_texts_per_s": n / raw_s,
            "ratio": float(np.median(ratios)),
            "ratios": ratios,
            "self_top1": bool(top) and top[0] == records[0]["id"],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(),
        },
    )
    say(args.system, f"text ingest {n / ingest_s:,.0f} texts/s (raw {n / raw_s:,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", choices=("run", "reopen", "text"), required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--budget", type=float, default=15.0)
    parser.add_argument("--tune-budget", type=float, default=45.0)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--texts", type=Path)
    parser.add_argument("--warm", type=int, default=64)
    parser.add_argument("--model")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {"run": run, "reopen": reopen, "text": text}[args.phase](args)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: DuckDB's bindings and torch in one process can print a
    # spurious report while modules are torn down (see mmstore.cli.exit)
    os._exit(0)
