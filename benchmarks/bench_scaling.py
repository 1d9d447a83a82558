"""How mmstore's costs grow with the store: at each size (default 10k, 100k and 1M 384-d
vectors), in a fresh process of its own, through the public API only:

- ingest: ``col.ingest`` of an Arrow table (id, label, vector) into catalog and index,
  vectors/s, and the RSS it adds above the input data, over the raw vector bytes; beside
  it, DuckDB's own insert of the same ids, labels and ``FLOAT[384]`` vectors into one table
  (the single writer's floor, no mmstore), and of the vectors as BLOBs (mmstore's layout);
- build: ``col.optimize`` (the HNSW build once the field reaches ``ann_threshold``, tuning,
  and the save of the index file);
- search: single-query ``col.search(vector=...)`` at k=10, p50 and p99 of 200 timed
  queries (after 20 warm-up ones), and recall@10 against an exact scan;
- bytes: the index file and the catalog (every other file of the store, after close);
- reopen: ``mmstore.open`` plus the first search, in a fresh process after ``import
  mmstore``, beside a bare DuckDB open of the same catalog file plus a memory-mapped FAISS
  read of the same index (its FAISS part, written out as a plain FAISS file beforehand) and
  one raw search, each three times, alternating, medians;
- serving RSS: what the reopen and 50 searches add to the fresh process's RSS above its
  imports (the mapped pages it touched included), over the raw vector bytes;
- peak RSS of the process (it also holds the benchmark's own copy of the vectors).

The data are a seeded Gaussian mixture (300 centres, normalized): clustered like real
embeddings, unlike uniform random vectors, which defeat ANN graphs. Growth is fitted as the
slope of log(cost) against log(n) (1 = linear). The machine's load average is printed, since
the cores are shared.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 10000,100000,1000000]
        [--index '{"ann_threshold": 20000}'] [--out benchmarks/out/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
DIM, CENTRES, QUERIES, WARMUP, K = 384, 300, 200, 20, 10
#: rows of BLOBs made and inserted at a time by the BLOB baseline
BLOB_PART = 500_000
#: costs whose growth with n is fitted
FITTED = (
    "ingest_s",
    "raw_duckdb_insert_s",
    "raw_duckdb_blob_s",
    "optimize_s",
    "search_p50_ms",
    "index_file_bytes",
    "catalog_bytes",
    "peak_rss_mb",
)


def main() -> int:
    args = parse_args()
    if args.reopen:
        print(reopen_once(Path(args.reopen), args.bare), flush=True)
        return 0
    if args.child:
        print(json.dumps(run_size(args.child, json.loads(args.index))), flush=True)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()
    rows = [run_child(n, args) for n in sizes]
    report = {
        "machine": machine(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "index_options": json.loads(args.index),
        "rows": rows,
        "slopes": fit([r for r in rows if "error" not in r]),
    }
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"written to {out}")
    return 1 if any("error" in r for r in rows) else 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--index", default="{}", help="the collection's index options, as JSON")
    p.add_argument("--deadline", type=float, default=1200.0, help="seconds per size")
    p.add_argument("--out", default=str(ROOT / "out" / "scaling.json"))
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--reopen", default="", help=argparse.SUPPRESS)
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def run_child(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size in a fresh process, so that its peak RSS and caches are its own."""
    cmd = [sys.executable, __file__, "--child", str(n), "--index", args.index]
    print(f"n={n:,}: running ...", flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.deadline)
    except subprocess.TimeoutExpired:
        return {"n": n, "error": f"stopped by the {args.deadline:.0f} s deadline"}
    if done.returncode != 0:
        return {"n": n, "error": done.stderr.strip().splitlines()[-1:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- one size -------------------------------------------------------------------------------
def mixture(n: int, seed: int) -> np.ndarray:
    """``n`` normalized points of a fixed Gaussian mixture (centres from seed 0)."""
    centres = np.random.default_rng(0).standard_normal((CENTRES, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * 0.03
        out[start:stop] = centres[rng.integers(0, CENTRES, stop - start)] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def run_size(n: int, index_options: dict[str, Any]) -> dict[str, Any]:
    import mmstore

    data, queries = mixture(n, seed=1), mixture(QUERIES + WARMUP, seed=2)
    table = arrow_table(data)
    row: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(dir=ROOT / "out") as tmp:
        path = Path(tmp) / "store"
        spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}
        with mmstore.open(path) as store:
            col = store.create_collection("v", encoders=spec, index=index_options)
            rss_before = rss_mb()
            t0 = time.perf_counter()
            col.ingest(table, chunk_size=65_536)
            row["ingest_s"] = time.perf_counter() - t0
            row["ingest_rss_above_input_mb"] = peak_rss_mb() - rss_before
            t0 = time.perf_counter()
            col.optimize()
            row["optimize_s"] = time.perf_counter() - t0
            row |= search_figures(col, data, queries)
            info = col.info()["fields"][0]["index"]
        row |= {"index": {k: v for k, v in info.items() if k != "index_file_bytes"}}
        row["index_file_bytes"] = info["index_file_bytes"]
        row["catalog_bytes"] = sum(
            p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix != ".mmi"
        )
        row |= reopen_figures(path, queries[0], info)
        row["raw_duckdb_insert_s"] = raw_duckdb_insert(Path(tmp) / "raw.duckdb", table, "array")
        row["raw_duckdb_blob_s"] = raw_duckdb_insert(Path(tmp) / "blob.duckdb", table, "blob")
    row["raw_vector_bytes"] = int(data.nbytes)
    row["peak_rss_mb"] = peak_rss_mb()
    row["ingest_vec_per_s"] = n / row["ingest_s"]
    row["raw_duckdb_vec_per_s"] = n / row["raw_duckdb_insert_s"]
    row["ingest_vs_duckdb"] = row["raw_duckdb_insert_s"] / row["ingest_s"]
    row["ingest_rss_over_raw"] = row["ingest_rss_above_input_mb"] * 2**20 / data.nbytes
    return row


def reopen_figures(path: Path, query: np.ndarray, info: dict[str, Any]) -> dict[str, Any]:
    """Reopen + first search in fresh processes: mmstore, and the bare baseline on the same
    files, alternating (so both meet the same page cache), medians of three."""
    np.save(path.parent / "query.npy", query)
    (mmi,) = path.rglob("*.mmi")
    _faiss_part(mmi, path.parent / "ann.faiss", info)
    seconds: dict[str, list[float]] = {"mmstore": [], "bare": []}
    serving: list[float] = []
    for _ in range(3):
        for side in seconds:
            cmd = [sys.executable, __file__, "--reopen", str(path)] + ["--bare"] * (side == "bare")
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            took, rss_added = done.stdout.split()[-2:]
            seconds[side].append(float(took))
            if side == "mmstore":
                serving.append(float(rss_added))
    mine, bare = (float(np.median(seconds[s])) for s in ("mmstore", "bare"))
    return {
        "reopen_s": mine,
        "bare_reopen_s": bare,
        "reopen_vs_bare": mine / bare,
        "serving_rss_mb": float(np.median(serving)),
    }


def _faiss_part(mmi: Path, to: Path, info: dict[str, Any]) -> None:
    """The FAISS index inside an mmstore index file, as a plain FAISS file (none for an
    exact field: the bare side then scans the file's mapped floats), with the width
    mmstore tuned, for the bare side's one search."""
    from mmstore.index.file import header
    from mmstore.storage.digest import mapped

    data = mapped(mmi)  # only the FAISS part is copied out
    head = header(data)
    start = -(-(16 + head["header_bytes"]) // 64) * 64
    offset, nbytes = head["layout"]["ann"]
    to.write_bytes(data[start + offset : start + offset + nbytes])
    tail = [start + head["layout"]["tail"][0], int(head["tail"])]
    (to.parent / "bare.json").write_text(json.dumps(info | {"mmi": str(mmi), "tail": tail}))


def reopen_once(path: Path, bare: bool) -> str:
    """Seconds from after the imports to the first search's result, in this process, and
    the RSS (MB) that the reopen and 50 searches added above the imports (mmstore only)."""
    import duckdb
    import faiss

    import mmstore

    query = np.load(path.parent / "query.npy")[None, :]
    before = rss_mb()
    t0 = time.perf_counter()
    if not bare:
        store = mmstore.open(path)
        store.collection("v").search(vector=query[0], k=K)
        seconds = time.perf_counter() - t0
        for _ in range(49):
            store.collection("v").search(vector=query[0], k=K)
        added = rss_mb() - before
        store.close()
        return f"{seconds} {added}"
    con = duckdb.connect(str(path / "catalog.duckdb"), read_only=True)
    spec = json.loads((path.parent / "bare.json").read_text())
    if (path.parent / "ann.faiss").stat().st_size:
        index = faiss.read_index(str(path.parent / "ann.faiss"), faiss.IO_FLAG_MMAP)
        if hasattr(index, "nprobe"):
            index.nprobe = spec.get("nprobe", 8)
        index.search(query, K)
    else:
        offset, rows = spec["tail"]
        floats = np.memmap(spec["mmi"], np.float32, "r", offset, (rows, DIM))
        np.argpartition(-(floats @ query[0]), K)[:K]
    seconds = time.perf_counter() - t0
    con.close()
    return f"{seconds} 0"


def rss_mb() -> float:
    """The resident set now, from /proc (peak_rss_mb where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def arrow_table(data: np.ndarray) -> Any:
    """Ids, one of 10 labels, and the vectors as a fixed-size list column."""
    import pyarrow as pa

    flat = pa.array(data.reshape(-1), pa.float32())
    ids = pa.array(np.arange(1, len(data) + 1).astype(str))
    labels = pa.array((np.arange(len(data)) % 10).astype(str))
    vectors = pa.FixedSizeListArray.from_arrays(flat, DIM)
    return pa.table({"id": ids, "label": labels, "e": vectors})


def raw_duckdb_insert(path: Path, table: Any, layout: str) -> float:
    """Seconds for DuckDB alone to take the same ids, labels and vectors into one table
    (one transaction, then a checkpoint): as ``FLOAT[DIM]`` arrays (the single writer's
    floor, one insert) or as one BLOB per vector (mmstore's first layout). The BLOBs are
    made and inserted :data:`BLOB_PART` rows at a time, outside the timer, so that the
    benchmark does not hold a second copy of every vector (6 GB at 4M)."""
    import duckdb

    kind = "BLOB" if layout == "blob" else f"FLOAT[{DIM}]"
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE t (vid BIGINT, id VARCHAR, label VARCHAR, vector {kind})")
    seconds = 0.0
    con.execute("BEGIN")
    step = BLOB_PART if layout == "blob" else table.num_rows
    for start in range(0, table.num_rows, step):
        part = table.slice(start, step)
        con.register("part", _as_blobs(part) if layout == "blob" else part)
        t0 = time.perf_counter()
        con.execute(
            "INSERT INTO t SELECT row_number() OVER () + ?, id, label, e FROM part", [start]
        )
        seconds += time.perf_counter() - t0
        con.unregister("part")
    t0 = time.perf_counter()
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    seconds += time.perf_counter() - t0
    con.close()
    return seconds


def _as_blobs(table: Any) -> Any:
    """``table`` with its vector column as one BLOB per vector."""
    import pyarrow as pa

    column = table.column("e").combine_chunks()
    values = column.flatten().to_numpy()
    blobs = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(DIM * 4), len(column), [None, pa.py_buffer(values)]
    )
    return table.set_column(2, "e", blobs.cast(pa.binary()))


def search_figures(col: Any, data: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Single-query latency (p50, p99) and recall@10 against an exact scan."""
    for q in queries[:WARMUP]:
        col.search(vector=q, k=K)
    times, found = [], []
    for q in queries[WARMUP:]:
        t0 = time.perf_counter()
        hits = col.search(vector=q, k=K)
        times.append(time.perf_counter() - t0)
        found.append({int(i) for i in hits.ids})
    truth = exact_top(data, queries[WARMUP:])
    recall = np.mean([len(f & set(t)) / K for f, t in zip(found, truth.tolist(), strict=True)])
    ms = np.array(times) * 1000
    return {
        "search_p50_ms": float(np.percentile(ms, 50)),
        "search_p99_ms": float(np.percentile(ms, 99)),
        "recall_at_10": float(recall),
    }


def exact_top(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Ids (1-based, as ingested) of the exact top ``K`` of each query."""
    scores = np.empty((len(queries), 0), np.float32)
    best = np.empty((len(queries), 0), np.int64)
    for start in range(0, len(data), 200_000):
        block = queries @ data[start : start + 200_000].T
        ids = np.broadcast_to(np.arange(start, start + block.shape[1]), block.shape)
        scores, best = np.concatenate([scores, block], 1), np.concatenate([best, ids], 1)
        keep = np.argsort(-scores, axis=1)[:, :K]
        scores, best = np.take_along_axis(scores, keep, 1), np.take_along_axis(best, keep, 1)
    return best + 1


# -- report ---------------------------------------------------------------------------------
def fit(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Slope of log(metric) against log(n), per metric: how it grows (1 = linearly)."""
    if len(rows) < 2:
        return {}
    n = np.log([r["n"] for r in rows])
    return {
        name: round(float(np.polyfit(n, np.log([max(r[name], 1e-9) for r in rows]), 1)[0]), 3)
        for name in FITTED
    }


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\nmachine: {m['cpus']} cores, {m['platform']}; python {m['python']}")
    print(
        f"load average (1, 5, 15 min): before {report['load_avg_before']}, "
        f"after {report['load_avg_after']}"
    )
    print(f"index options: {report['index_options'] or 'defaults'}")
    head = (
        "n",
        "ingest vec/s",
        "raw duckdb vec/s",
        "vs duckdb",
        "ingest RSS / raw",
        "optimize s",
        "index",
        "p50 ms",
        "p99 ms",
        "recall@10",
        "index MB",
        "catalog MB",
        "raw MB",
        "peak RSS MB",
        "reopen s",
        "bare reopen s",
        "reopen vs bare",
        "serving RSS / raw",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in report["rows"]:
        print(table_row(r))
    if report["slopes"]:
        print("\nfitted growth, slope of log(cost) vs log(n) (1.0 = linear):")
        for name, slope in report["slopes"].items():
            print(f"  {name}: {slope}")


def table_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['n']:,} | {r['error']} |"
    ix = r["index"]
    kind = ix["kind"] + (f" M={ix['M']} ef={ix['efSearch']}" if ix["kind"] == "hnsw" else "")
    mb = 1024 * 1024
    cells = (
        f"{r['n']:,}",
        f"{r['ingest_vec_per_s']:,.0f}",
        f"{r['raw_duckdb_vec_per_s']:,.0f}",
        f"{r['ingest_vs_duckdb']:.2f}x",
        f"{r['ingest_rss_over_raw']:.2f}x",
        f"{r['optimize_s']:.2f}",
        kind,
        f"{r['search_p50_ms']:.3f}",
        f"{r['search_p99_ms']:.3f}",
        f"{r['recall_at_10']:.3f}",
        f"{r['index_file_bytes'] / mb:,.1f}",
        f"{r['catalog_bytes'] / mb:,.1f}",
        f"{r['raw_vector_bytes'] / mb:,.1f}",
        f"{r['peak_rss_mb']:,.0f}",
        f"{r['reopen_s']:.2f}",
        f"{r['bare_reopen_s']:.2f}",
        f"{r['reopen_vs_bare']:.2f}x",
        f"{r['serving_rss_mb'] * 2**20 / r['raw_vector_bytes']:.2f}x",
    )
    return "| " + " | ".join(cells) + " |"


def machine() -> dict[str, Any]:
    import duckdb
    import faiss

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "faiss": faiss.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


if __name__ == "__main__":
    sys.exit(main())
