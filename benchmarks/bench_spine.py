"""The spine's figures, each a ratio against a baseline measured in the same run.

1. Text ingest: mmstore ``ingest`` of real sentences (docstrings found on this machine) vs
   raw ``SentenceTransformer.encode`` of the same texts at the same batch size, interleaved
   chunk by chunk; the median of per-chunk throughput ratios (goal >= 0.9).
2. Bulk ingest of precomputed 384-d vectors (real MiniLM embeddings of docstring
   paragraphs, computed once by embed_corpus.py) with id and a label into catalog and index
   (goal >= 100,000 vectors/s), and the HNSW build that ``optimize`` runs after it.
3. Search at k=10 on 100,000 vectors: p50/p99 of ``col.search`` (hydrated hits) and of the
   index alone, vs raw FAISS on the same HNSW graph with the same search width, queries
   interleaved (goal <= 1.15); recall@10 against exact search, for 1,000 held-out
   embeddings of other docstring paragraphs as queries.
4. Reopen of the 100,000-vector store: open + first search, median of 5 (goal < 1 s).

Run: ``python benchmarks/bench_spine.py [--texts 20000] [--vectors 100000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from mmstore_sbert import load_model

import mmstore
from mmstore.corpus import docstrings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_corpus import cached_embeddings

BATCH = 64


def text_ingest(texts: list[dict[str, str]], chunk: int, workdir: Path) -> dict[str, Any]:
    model = load_model("all-MiniLM-L6-v2", "cpu")
    model.encode(["warm up"] * BATCH, batch_size=BATCH)
    ratios, raw_total, mms_total = [], 0.0, 0.0
    with mmstore.open(workdir / "text.mms") as store:
        col = store.create_collection(
            "t", encoders={"text": {"encoder": "sentence_transformers", "batch_size": BATCH}}
        )
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            t0 = time.perf_counter()
            model.encode([r["text"] for r in part], batch_size=BATCH, normalize_embeddings=True)
            raw = time.perf_counter() - t0
            t0 = time.perf_counter()
            col.ingest(
                [
                    {"id": r["id"], "text": r["text"], "meta": {"package": r["package"]}}
                    for r in part
                ]
            )
            mms = time.perf_counter() - t0
            ratios.append(raw / mms)
            raw_total, mms_total = raw_total + raw, mms_total + mms
            print(
                f"  texts {start + len(part):>6}: raw {len(part) / raw:6.1f}/s  "
                f"mmstore {len(part) / mms:6.1f}/s  ratio {raw / mms:.3f}",
                flush=True,
            )
    return {
        "texts": len(texts),
        "chunk": chunk,
        "raw_per_s": len(texts) / raw_total,
        "mmstore_per_s": len(texts) / mms_total,
        "throughput_ratio_median": statistics.median(ratios),
        "throughput_ratio_min": min(ratios),
        "throughput_ratio_max": max(ratios),
    }


def bulk_ingest(x: np.ndarray, path: Path) -> dict[str, Any]:
    import pyarrow as pa

    n, d = x.shape
    cats = np.array([f"cat{i % 10}" for i in range(n)])
    table = pa.table(
        {
            "id": pa.array([f"v{i}" for i in range(n)]),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d),
            "label": pa.array(cats),
        }
    )
    with mmstore.open(path) as store:
        col = store.create_collection(
            "v", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": d}}
        )
        t0 = time.perf_counter()
        report = col.ingest(table, chunk_size=20_000)
        ingest_s = time.perf_counter() - t0
        assert report.written == n
        t0 = time.perf_counter()
        col.optimize()
        optimize_s = time.perf_counter() - t0
        info = col.info()["fields"][0]["index"]
    raw_index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    raw_index.hnsw.efConstruction = 80
    t0 = time.perf_counter()
    raw_index.add(x)
    raw_build = time.perf_counter() - t0
    return {
        "vectors": n,
        "ingest_s": ingest_s,
        "vectors_per_s": n / ingest_s,
        "optimize_s": optimize_s,
        "raw_faiss_hnsw_build_s": raw_build,
        "index": info,
    }


def search(path: Path, x: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    with mmstore.open(path) as store:
        col = store.collection("v")
        f = col.fields["emb"]
        index = col.indexes.get(f)
        params = faiss.SearchParametersHNSW()
        params.efSearch = index.ef_search
        col.search(vector=queries[0], k=10)
        runs = {
            "raw": lambda q: index.hnsw.search(q[None, :], 10, params=params),
            "core": lambda q: index.search(q[None, :], 10),
            "api": lambda q: col.search(vector=q, k=10),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        got = []
        for i, q in enumerate(queries):
            names = list(runs)
            names = names[i % 3 :] + names[: i % 3]  # each goes first a third of the time
            for name in names:
                t0 = time.perf_counter()
                out = runs[name](q)
                times[name].append(time.perf_counter() - t0)
                if name == "api":
                    got.append(out.ids)
        raw, core, api = times["raw"], times["core"], times["api"]
        exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
        recall = np.mean(
            [len({f"v{i}" for i in e} & set(g)) / 10 for e, g in zip(exact, got, strict=True)]
        )
        filtered = []
        for q in queries[:200]:
            t0 = time.perf_counter()
            col.search(vector=q, k=10, where={"label": "cat3"})
            filtered.append(time.perf_counter() - t0)

    def pct(values: list[float], p: float) -> float:
        return float(np.percentile(values, p) * 1000)

    return {
        "queries": len(queries),
        "efSearch": index.ef_search,
        "recall@10": float(recall),
        "raw_faiss_ms": {"p50": pct(raw, 50), "p99": pct(raw, 99)},
        "index_ms": {"p50": pct(core, 50), "p99": pct(core, 99)},
        "api_ms": {"p50": pct(api, 50), "p99": pct(api, 99)},
        "filtered_10pct_ms": {"p50": pct(filtered, 50), "p99": pct(filtered, 99)},
        "ratio_index_p50": pct(core, 50) / pct(raw, 50),
        "ratio_index_p99": pct(core, 99) / pct(raw, 99),
        "ratio_api_p50": pct(api, 50) / pct(raw, 50),
        "ratio_api_p99": pct(api, 99) / pct(raw, 99),
    }


def reopen(path: Path, query: np.ndarray, times: int = 5) -> dict[str, Any]:
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        with mmstore.open(path) as store:
            store.collection("v").search(vector=query, k=10)
            samples.append(time.perf_counter() - t0)
    return {"open_and_first_search_s_median": statistics.median(samples), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/spine.json"))
    parser.add_argument("--skip-text", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mmstore-bench-"))
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "versions": {"mmstore": mmstore.__version__, "faiss": faiss.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        if not args.skip_text:
            texts = docstrings(args.texts)
            print(f"text corpus: {len(texts)} docstrings", flush=True)
            results["text_ingest"] = text_ingest(texts, args.chunk, workdir)
            print(json.dumps(results["text_ingest"], indent=2), flush=True)
        _, vectors = cached_embeddings(args.vectors + args.queries)
        x, queries = vectors[: args.vectors], vectors[args.vectors :]
        print(f"vectors: {len(x)} to index, {len(queries)} held-out queries", flush=True)
        results["bulk_ingest"] = bulk_ingest(x, workdir / "vec.mms")
        print(json.dumps(results["bulk_ingest"], indent=2), flush=True)
        results["search"] = search(workdir / "vec.mms", x, queries)
        print(json.dumps(results["search"], indent=2), flush=True)
        results["reopen"] = reopen(workdir / "vec.mms", queries[0])
        print(json.dumps(results["reopen"], indent=2), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    print(table(results))


def table(r: dict[str, Any]) -> str:
    """The figures as a markdown table, each beside its goal."""
    rows = [
        f"Machine: {r['machine']}; mmstore {r['versions']['mmstore']}, "
        f"faiss {r['versions']['faiss']}; {r['date']}.",
        "",
        "| figure | measured | goal |",
        "|---|---|---|",
    ]
    if "text_ingest" in r:
        t = r["text_ingest"]
        rows.append(
            f"| text ingest / raw `encode` throughput ({t['texts']} docstrings, batch "
            f"{BATCH}), median of per-chunk ratios | {t['throughput_ratio_median']:.3f} "
            f"(min {t['throughput_ratio_min']:.3f}; {t['mmstore_per_s']:.0f} vs "
            f"{t['raw_per_s']:.0f} texts/s) | >= 0.9 |"
        )
    b = r["bulk_ingest"]
    rows.append(
        f"| bulk ingest of {b['vectors']:,} 384-d vectors with id and label, into "
        f"catalog and index | {b['vectors_per_s']:,.0f} vectors/s | >= 100,000 |"
    )
    rows.append(
        f"| HNSW build by `optimize` (raw FAISS build of the same vectors) | "
        f"{b['optimize_s']:.1f} s ({b['raw_faiss_hnsw_build_s']:.1f} s) | - |"
    )
    s = r["search"]
    rows.append(
        f"| search k=10, index alone / raw FAISS, p50 (p99) | "
        f"{s['ratio_index_p50']:.2f} ({s['ratio_index_p99']:.2f}); "
        f"{s['index_ms']['p50']:.3f} ms vs {s['raw_faiss_ms']['p50']:.3f} ms | <= 1.15 |"
    )
    rows.append(
        f"| search k=10 through `col.search` with hydrated hits / raw FAISS, p50 (p99) "
        f"| {s['ratio_api_p50']:.2f} ({s['ratio_api_p99']:.2f}); "
        f"{s['api_ms']['p50']:.3f} ms | - |"
    )
    rows.append(
        f"| recall@10 vs exact (efSearch {s['efSearch']} tuned at build) | "
        f"{s['recall@10']:.3f} | >= 0.95 |"
    )
    rows.append(
        f"| filtered search, 10% selectivity, p50 (p99) | "
        f"{s['filtered_10pct_ms']['p50']:.2f} ms ({s['filtered_10pct_ms']['p99']:.2f}) "
        "| - |"
    )
    rows.append(
        f"| reopen of the {b['vectors']:,}-vector store: open + first search, median "
        f"| {r['reopen']['open_and_first_search_s_median']:.2f} s | < 1 s |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    from mmstore.cli.exit import exit_quietly

    main()
    exit_quietly(0)
