"""Load test of the HTTP service: search requests per second and latency percentiles with
8 concurrent clients against a 100,000-vector store, as ratios to the same searches
through the Python API and to a bare ASGI app, all in the same run.

1. Build a store of 100,000 384-d vectors (the cached real MiniLM embeddings of
   benchmarks/embed_corpus.py when present, else the Gaussian mixture of bench_scaling.py;
   the output says which) with a label of 10 categories, and its default index
   (``optimize``).
2. Python API: the query set through ``col.search(vector=q, k=10)``, in one thread and in
   8 threads (snapshot reads run in parallel), unfiltered and filtered by label.
3. Service: ``mmstore serve`` in its own process on a loopback port, with an API key;
   8 client threads (one ``httpx.Client`` each, keep-alive) send the same queries as JSON
   until each has sent its share; the same two query kinds.
4. Ceiling: a bare ASGI app on uvicorn in its own process, which reads each request's body
   and answers the body of a real search answer of step 3 (same size), to the same 8
   clients sending the same requests: what HTTP on this machine costs without mmstore.

Bounded: a fixed number of requests per phase (``--requests``), a deadline per phase
(``--deadline``), and the server is stopped at the end whatever happens. The figures are
medians of per-request latencies (ms), p99, requests/s over the phase's wall time, and
ratios service/API. On 2 cores the clients, the server and its thread pool share the CPUs.

Run: ``.venv/bin/python benchmarks/bench_service.py [--vectors 100000] [--clients 8]``
(``--vectors 2000 --requests 200`` is the smoke size).
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import mmstore
from mmstore.service.keys import KeyStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import mixture

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
    return mixture(n, seed=1), mixture(queries, seed=2), "Gaussian mixture (bench_scaling.py)"


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


def api_phase(
    path: Path, queries: np.ndarray, where: dict[str, Any] | None, threads: int = 1
) -> dict[str, float]:
    with mmstore.open(path, read_only=True) as store:
        col = store.collection("bench")
        for q in queries[:20]:  # warm up
            col.search(vector=q, k=10, where=where)
        lat: list[list[float]] = [[] for _ in range(threads)]

        def run(i: int) -> None:
            for q in queries[i::threads]:
                t = time.perf_counter()
                col.search(vector=q, k=10, where=where)
                lat[i].append((time.perf_counter() - t) * 1000)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return summary([x for one in lat for x in one], time.perf_counter() - start)


def serve(path: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mmstore", "serve", str(path), "--port", str(port)]
    return started([*cmd, "--log-level", "warning", "--max-k", "100"], port)


def serve_bare(body: Path, port: int) -> subprocess.Popen[bytes]:
    return started([sys.executable, __file__, "--bare", str(body), "--port", str(port)], port)


def bare_app(body: bytes) -> Any:
    """An ASGI app that reads the request's body and answers ``body``."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def started(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, start_new_session=True)
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
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)  # serve the ceiling
    args = parser.parse_args()
    if args.bare is not None:
        import uvicorn

        app = bare_app(args.bare.read_bytes())
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")
        return

    data, queries, source = vectors(args.vectors, args.requests)
    work = Path(tempfile.mkdtemp(prefix="mms-bench-service-"))
    try:
        t = time.perf_counter()
        key, index = build(work / "store", data)
        print(
            f"store: {len(data):,} x {DIM} {source}; index {index}; built in "
            f"{time.perf_counter() - t:.1f}s"
        )
        api, http = measure(work, key, queries, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, source, index, api, http)


def measure(
    work: Path, key: str, queries: np.ndarray, args: argparse.Namespace
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The API phases (1 thread and ``clients`` threads), the service's, then the bare
    app's with a body of the service's size."""
    label = {"label": "c3"}
    api: dict[str, dict[str, float]] = {}
    for kind, where in (("unfiltered", None), ("filtered", label)):
        api[kind] = api_phase(work / "store", queries, where)
        api[f"{kind}, threads"] = api_phase(work / "store", queries, where, args.clients)
    http: dict[str, dict[str, float]] = {}
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    with running(serve(work / "store", port)):
        for kind, where in (("unfiltered", None), ("filtered", label)):
            http[kind] = http_phase(url, key, queries, where, args.clients, args.deadline)
        answer = httpx.post(
            f"{url}/collections/bench/search",
            json={"vector": queries[0].tolist(), "k": 10},
            headers={"Authorization": f"Bearer {key}"},
        )
    (work / "answer.json").write_bytes(answer.content)
    with running(serve_bare(work / "answer.json", port)):
        http["bare"] = http_phase(url, key, queries, None, args.clients, args.deadline)
    http["bare"]["body_bytes"] = len(answer.content)
    return api, http


@contextlib.contextmanager
def running(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def report(
    args: argparse.Namespace,
    source: str,
    index: dict[str, Any],
    api: dict[str, dict[str, float]],
    http: dict[str, dict[str, float]],
) -> None:
    n = args.clients
    print(f"load average {os.getloadavg()}")
    print("\n| search, k=10 | req/s | p50 ms | p99 ms | p99/p50 |\n|---|---|---|---|---|")
    rows = [(f"API, 1 thread, {k}", api[k]) for k in ("unfiltered", "filtered")]
    rows += [(f"API, {n} threads, {k}", api[f"{k}, threads"]) for k in ("unfiltered", "filtered")]
    rows += [(f"HTTP, {n} clients, {k}", http[k]) for k in ("unfiltered", "filtered")]
    rows += [(f"bare ASGI app, {n} clients", http["bare"])]
    for name, f in rows:
        ratio = f["p99_ms"] / f["p50_ms"]
        print(f"| {name} | {f['req_per_s']} | {f['p50_ms']} | {f['p99_ms']} | {ratio:.2f} |")
    ratios = {
        "http_vs_bare": http["unfiltered"]["req_per_s"] / http["bare"]["req_per_s"],
        "http_vs_api": http["unfiltered"]["req_per_s"] / api["unfiltered"]["req_per_s"],
        "filtered_http_vs_api_threads": http["filtered"]["req_per_s"]
        / api["filtered, threads"]["req_per_s"],
        "filtered_http_p50_vs_api_p50": http["filtered"]["p50_ms"] / api["filtered"]["p50_ms"],
    }
    print("\n" + "\n".join(f"ratio {k}: {v:.2f}" for k, v in ratios.items()))
    print("  ratio HTTP/API")  # the smoke test's marker that the report came out whole
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
        "ratios": ratios,
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
