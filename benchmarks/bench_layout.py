"""Where the floats of a store should live: the layout study of issue 18. Three layouts of the
same ids, labels and float32 vectors, each written in one committed call and read back:

- ``blob``: a BLOB of ``4d`` bytes per vector in a DuckDB table (mmstore's layout before
  issue 18);
- ``array``: a DuckDB ``FLOAT[d]`` column;
- ``segment``: the vectors as one raw little-endian float32 file beside the catalog (a
  header, then the rows), written and fsynced before the DuckDB transaction that names it
  (with its size and per-block CRC32s) commits; read back through ``np.memmap``.

Per layout: write rate (vectors/s, the commit and fsync included), bytes on disk, reading
every vector back into one numpy array, gathering 10,000 random rows by vid, and, for the
segment file, checking every block's CRC32 (what a reopen that checks before use pays).
Each layout runs in a fresh process, in the order given, and the whole study is repeated
``--repeat`` times; the medians are printed.

    .venv/bin/python benchmarks/bench_layout.py [--n 1000000] [--dim 384] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
LAYOUTS = ("blob", "array", "segment")
BLOCK = 1 << 20  # bytes per checksummed block of a segment file
GATHER = 10_000


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.n, args.dim)), flush=True)
        return 0
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in LAYOUTS}
    load = os.getloadavg()
    for _ in range(args.repeat):
        for layout in LAYOUTS:
            cmd = [sys.executable, __file__, "--child", layout, "--n", str(args.n)]
            out = subprocess.run([*cmd, "--dim", str(args.dim)], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            runs[layout].append(json.loads(out.stdout.splitlines()[-1]))
    report = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    print(
        f"n={args.n} dim={args.dim} repeat={args.repeat} load before {load}, after "
        f"{os.getloadavg()}"
    )
    print_table(report, args.n * args.dim * 4)
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", choices=LAYOUTS, help=argparse.SUPPRESS)
    return p.parse_args()


def data(n: int, dim: int) -> tuple[Any, np.ndarray]:
    import pyarrow as pa

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    ids = pa.array(np.char.add("r", np.arange(n).astype(str)))
    labels = pa.array((np.arange(n) % 10).astype(str))
    return pa.table({"id": ids, "label": labels}), vectors


def run(layout: str, n: int, dim: int) -> dict[str, float]:
    import duckdb
    import pyarrow as pa

    table, vectors = data(n, dim)
    with tempfile.TemporaryDirectory(dir=ROOT / "out") as tmp:
        con = duckdb.connect(str(Path(tmp) / "catalog.duckdb"))
        t0 = time.perf_counter()
        if layout == "segment":
            write_segment(Path(tmp) / "seg-1.f32", vectors, con, table)
        else:
            kind = f"FLOAT[{dim}]" if layout == "array" else "BLOB"
            if layout == "array":
                column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
            else:
                column = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(dim * 4), n, [None, pa.py_buffer(vectors)]
                )
            con.register("new", table.append_column("vector", column))
            con.execute(f"CREATE TABLE t (vid BIGINT, id VARCHAR, label VARCHAR, vector {kind})")
            con.execute("BEGIN")
            cast = "vector" if layout == "array" else "vector::BLOB"
            con.execute(f"INSERT INTO t SELECT row_number() OVER (), id, label, {cast} FROM new")
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
        write_s = time.perf_counter() - t0
        con.close()
        disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        read_s, gather_s, check_s = read_back(layout, Path(tmp), n, dim, vectors)
    return {
        "write_vec_per_s": n / write_s,
        "write_s": write_s,
        "disk_bytes": float(disk),
        "read_all_s": read_s,
        "gather_10k_ms": gather_s * 1000,
        "check_s": check_s,
        "peak_rss_mb": rss_mb,
    }


def write_segment(path: Path, vectors: np.ndarray, con: Any, table: Any) -> None:
    """The segment layout's write: the file, fsynced, then one transaction naming it."""
    import pyarrow as pa

    raw = memoryview(np.ascontiguousarray(vectors).reshape(-1).view(np.uint8))
    crcs = [zlib.crc32(raw[i : i + BLOCK]) for i in range(0, len(raw), BLOCK)]
    with open(path, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    n = len(vectors)
    rows = table.append_column("row", pa.array(np.arange(n, dtype=np.int64)))
    con.register("new", rows)
    con.execute("CREATE TABLE t (vid BIGINT, id VARCHAR, label VARCHAR, segment INT, row BIGINT)")
    con.execute("CREATE TABLE segments (id INT, file VARCHAR, bytes BIGINT, crcs VARCHAR)")
    con.execute("BEGIN")
    con.execute("INSERT INTO t SELECT row + 1, id, label, 1, row FROM new")
    con.execute("INSERT INTO segments VALUES (1, ?, ?, ?)", [path.name, len(raw), json.dumps(crcs)])
    con.execute("COMMIT")
    con.execute("CHECKPOINT")


def read_back(
    layout: str, folder: Path, n: int, dim: int, truth: np.ndarray
) -> tuple[float, float, float]:
    """Seconds to read every vector into numpy and to gather random rows; the segment's
    block check. Each read is compared with what was written."""
    import duckdb

    con = duckdb.connect(str(folder / "catalog.duckdb"), read_only=True)
    pick = np.sort(np.random.default_rng(1).choice(n, GATHER, replace=False))
    check_s = 0.0
    t0 = time.perf_counter()
    if layout == "segment":
        mm = np.memmap(folder / "seg-1.f32", np.float32, "r", shape=(n, dim))
        every = np.array(mm)
    else:
        column = con.execute("SELECT vector FROM t ORDER BY vid").to_arrow_table().column(0)
        every = as_matrix(column.combine_chunks(), n, dim)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if layout == "segment":
        rows = con.execute("SELECT row FROM t WHERE vid IN (SELECT unnest(?))", [pick + 1])
        got = np.asarray(mm[np.sort(np.array(rows.fetchall())[:, 0])])
    else:
        sql = "SELECT vector FROM t WHERE vid IN (SELECT unnest(?)) ORDER BY vid"
        got = as_matrix(
            con.execute(sql, [(pick + 1).tolist()]).to_arrow_table().column(0).combine_chunks(),
            GATHER,
            dim,
        )
    gather_s = time.perf_counter() - t0
    if layout == "segment":
        t0 = time.perf_counter()
        (crcs,) = con.execute("SELECT crcs FROM segments").fetchone()
        raw = memoryview(mm.reshape(-1).view(np.uint8))
        ok = [zlib.crc32(raw[i : i + BLOCK]) for i in range(0, len(raw), BLOCK)]
        check_s = time.perf_counter() - t0
        assert ok == json.loads(crcs)
    assert np.array_equal(every, truth) and np.array_equal(got, truth[pick])
    return read_s, gather_s, check_s


def as_matrix(column: Any, n: int, dim: int) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        return column.flatten().to_numpy().reshape(n, dim)
    offsets = np.frombuffer(column.buffers()[1], np.int32, n + 1)
    data = np.frombuffer(column.buffers()[2], np.uint8, n * dim * 4, int(offsets[0]))
    return data.view(np.float32).reshape(n, dim).copy()


def print_table(report: dict[str, dict[str, float]], raw_bytes: int) -> None:
    cols = (
        "write_vec_per_s",
        "disk_bytes",
        "read_all_s",
        "gather_10k_ms",
        "check_s",
        "peak_rss_mb",
    )
    print("| layout | " + " | ".join(cols) + " | disk / raw |")
    print("|---" * (len(cols) + 2) + "|")
    for layout, r in report.items():
        cells = [f"{r[c]:,.0f}" if r[c] >= 100 else f"{r[c]:.3f}" for c in cols]
        print(f"| {layout} | " + " | ".join(cells) + f" | {r['disk_bytes'] / raw_bytes:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
