"""Load test of the HTTP service: search requests per second and latency percentiles with
8 concurrent clients against a 100,000-vector store, as a ratio to the same searches
through the Python API in the same run.

1. Build a store of 100,000 384-d vectors (the cached real MiniLM embeddings of
   benchmarks/embed_corpus.py when present, else random normalized vectors; the output
   says which) with a label of 10 categories, and its default index (``optimize``).
2. Python API: the query set through ``col.search(vector=q, k=10)`` in one thread (the
   embedded store is one process's single connection), unfiltered and filtered by label.
3. Service: ``mmstore serve`` in its own process on a loopback port, with an API key;
   8 client threads (one ``httpx.Client`` each, keep-alive) send the same queries as JSON
   until each has sent its share; the same two query kinds.

Bounded: a fixed number of requests per phase (``--requests``), a deadline per phase
(``--deadline``), and the server is stopped at the end whatever happens. The figures are
medians of per-request latencies (ms), p99, requests/s over the phase's wall time, and
ratios service/API. On 2 cores the clients, the server and its thread pool share the CPUs.

Run: ``.venv/bin/python benchmarks/bench_service.py [--vectors 100000] [--clients 8]``
(``--vectors 2000 --requests 200`` is the smoke size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import mmstore
from mmstore.service.keys import KeyStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = Path(__file__).resolve().parent / "out"
DIM = 384
CATEGORIES = 10


def vectors(n: int, queries: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Store vectors and query vectors: cached real embeddings when there are enough for
    the store and at least 500 held-out queries (cycled up to ``queries``)."""
    for path in sorted(OUT.glob("minilm-*.npy")):
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        held_out = min(queries, len(data) - n)
        if held_out >= min(queries, 500):
            rows = np.asarray(data[: n + held_out], dtype=np.float32)
            asked = np.resize(rows[n:], (queries, rows.shape[1]))
            return rows[:n], asked, f"real MiniLM embeddings ({path.name}), {held_out} queries"
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(n + queries, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows[:n], rows[n:], "random normalized vectors"


def build(path: Path, data: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The store, its default index built; returns an API key and the index description."""
    import pyarrow as pa

    with mmstore.open(path) as store:
        col = store.create_collection(
            "bench", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}
        )
        ids = pa.array([f"v{i}" for i in range(len(data))])
        labels = pa.array([f"c{i % CATEGORIES}" for i in range(len(data))])
        emb = pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), DIM)
        col.ingest(pa.table({"id": ids, "label": labels, "emb": emb}))
        col.optimize()
        index = col.info()["fields"][0]["index"]
        _, key = KeyStore(store.catalog).create("bench", ["read"], "*")
    return key, index


def summary(latencies_ms: list[float], wall_s: float) -> dict[str, float]:
    a = np.asarray(latencies_ms)
    return {
        "requests": len(a),
        "req_per_s": round(len(a) / wall_s, 1),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
    }


def api_phase(path: Path, queries: np.ndarray, where: dict[str, Any] | None) -> dict[str, float]:
    with mmstore.open(path, read_only=True) as store:
        col = store.collection("bench")
        for q in queries[:20]:  # warm up
            col.search(vector=q, k=10, where=where)
        lat = []
        start = time.perf_counter()
        for q in queries:
            t = time.perf_counter()
            col.search(vector=q, k=10, where=where)
            lat.append((time.perf_counter() - t) * 1000)
        return summary(lat, time.perf_counter() - start)


def serve(path: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mmstore", "serve", str(path), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning", "--max-k", "100"], start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError("the service exited before it answered /health")
    proc.kill()
    raise RuntimeError("the service did not answer /health within 120 s")


def http_phase(
    url: str,
    key: str,
    queries: np.ndarray,
    where: dict[str, Any] | None,
    clients: int,
    deadline_s: float,
) -> dict[str, float]:
    bodies = [json.dumps({"vector": q.tolist(), "k": 10, "where": where}) for q in queries]
    shares = [bodies[i::clients] for i in range(clients)]
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    stop_at = time.monotonic() + deadline_s
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    ready = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for body in shares[i][:5]:  # warm up: connection, key check, index load
                http.post("/collections/bench/search", content=body)
            ready.wait()
            for body in shares[i]:
                if time.monotonic() > stop_at:
                    return
                t = time.perf_counter()
                r = http.post("/collections/bench/search", content=body)
                lat[i].append((time.perf_counter() - t) * 1000)
                if r.status_code != 200 or len(r.json()["hits"]) != 10:
                    errors.append(f"{r.status_code}: {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    out = summary([x for part in lat for x in part], wall)
    out["completed"] = out["requests"] == len(bodies)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2_000, help="queries per phase")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per phase")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--out", type=Path, default=OUT / "service.json", help="figures (JSON)")
    args = parser.parse_args()

    data, queries, source = vectors(args.vectors, args.requests)
    work = Path(tempfile.mkdtemp(prefix="mms-bench-service-"))
    proc = None
    try:
        t = time.perf_counter()
        key, index = build(work / "store", data)
        print(
            f"store: {len(data):,} x {DIM} {source}; index {index}; built in "
            f"{time.perf_counter() - t:.1f}s"
        )
        label = {"label": "c3"}
        api = {
            "unfiltered": api_phase(work / "store", queries, None),
            "filtered": api_phase(work / "store", queries, label),
        }
        port = args.port or _free_port()
        proc = serve(work / "store", port)
        url = f"http://127.0.0.1:{port}"
        http = {
            "unfiltered": http_phase(url, key, queries, None, args.clients, args.deadline),
            "filtered": http_phase(url, key, queries, label, args.clients, args.deadline),
        }
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    report(args, source, index, api, http)


def report(
    args: argparse.Namespace,
    source: str,
    index: dict[str, Any],
    api: dict[str, dict[str, float]],
    http: dict[str, dict[str, float]],
) -> None:
    print(f"\n{'search, k=10':<24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for kind in ("unfiltered", "filtered"):
        a, h = api[kind], http[kind]
        print(
            f"{'API, 1 thread, ' + kind:<24}{a['req_per_s']:>10}{a['p50_ms']:>10}{a['p99_ms']:>10}"
        )
        name = f"HTTP, {args.clients} clients, {kind}"
        print(f"{name:<24}{h['req_per_s']:>10}{h['p50_ms']:>10}{h['p99_ms']:>10}")
        print(
            f"{'  ratio HTTP/API':<24}{h['req_per_s'] / a['req_per_s']:>10.2f}"
            f"{h['p50_ms'] / a['p50_ms']:>10.2f}{h['p99_ms'] / a['p99_ms']:>10.2f}"
        )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "vectors": args.vectors,
        "data": source,
        "index": index,
        "clients": args.clients,
        "api": api,
        "http": http,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    from mmstore.cli.exit import exit_quietly

    main()
    exit_quietly(0)
