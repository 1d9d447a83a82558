"""The HTTP service under concurrent load, on real uvicorn servers on loopback ports:
searches answered while a write's transaction is open; 503 with Retry-After once
``max_inflight`` requests are in hand (and /health still answered); 100 concurrent
oversized requests answered 413 while searches go on; jobs kept in the catalog across a
restart, the ones left running marked interrupted; and a SIGTERM that lets a request in
flight finish before the service closes the store.

Bad inputs tried: bodies over ``max_body_bytes`` (by Content-Length), a request past the
admission limit, an unknown job id, a job an earlier service left running."""

from __future__ import annotations

import concurrent.futures as cf
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import mmstore
from mmstore.service import Settings
from mmstore.service.app import create_app
from mmstore.service.jobs import Job, JobLog
from tests.reliability.test_r5_threads import (
    GROUP,
    VEC,
    check_in_flight,
    group,
    slow_records,
    vector,
)
from tests.servers import answers, free_port, running


def store_with_groups(path: Path, groups: int = 12) -> mmstore.Store:
    store = mmstore.open(path)
    col = store.create_collection("c", encoders=VEC, index={"ann_threshold": 40})
    for g in range(groups):
        col.ingest(group(g, 1))
    return store


def search_body(g: int) -> dict[str, Any]:
    return {"vector": vector(g, 0, 0), "k": GROUP, "where": {"g": g}}


def test_http_searches_go_on_while_a_write_is_in_flight(tmp_path: Path) -> None:
    """While one ingest keeps its transaction open for 2 s, searches and gets over HTTP
    from 4 clients finish inside its span and see none of its records; after it, all."""
    store = store_with_groups(tmp_path / "s")
    app = create_app(store, Settings(auth=False))
    done: list[tuple[float, int]] = []
    errors: list[str] = []
    stop = threading.Event()
    with running(app) as url:

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/collections/c/search", json=search_body(3))
                    ids = [h["id"] for h in r.json()["hits"]]
                    got = http.get("/collections/c/records", params={"ids": ",".join(ids)})
                    newer = {"vector": vector(100, 0, 0), "k": 80, "where": {"g": {"$gte": 100}}}
                    r2 = http.post("/collections/c/search", json=newer)
                    new = [h for h in r2.json()["hits"] if h["meta"]["g"] >= 100]
                    if r.status_code != 200 or len(got.json()["records"]) != GROUP:
                        errors.append(f"{r.status_code} {got.status_code}")
                    done.append((time.monotonic(), len(new)))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        began = time.monotonic()
        store.collection("c").ingest(slow_records(threading.Event(), 10, 0.2), chunk_size=GROUP)
        ended = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    store.close()
    assert errors == [], errors[:5]
    check_in_flight(done, began, ended, least=10)


def test_past_max_inflight_a_request_gets_503_with_retry_after(tmp_path: Path) -> None:
    """Two ingests wait for the write lock (held here), so two requests are in hand: a
    search is answered 503 with Retry-After at once, /health 200; once the lock is let
    go both ingests are written and searches are answered again."""
    store = store_with_groups(tmp_path / "s", groups=2)
    app = create_app(store, Settings(auth=False, max_inflight=2))
    service = app.state.service
    with running(app) as url, cf.ThreadPoolExecutor(2) as pool:
        with service.lock:
            posts = [
                pool.submit(httpx.post, f"{url}/collections/c/records", json={"records": rs})
                for rs in (group(50, 1), group(51, 1))
            ]
            deadline = time.monotonic() + 10
            while app.state.admission.in_hand < 2:
                assert time.monotonic() < deadline, "the ingests never reached the route"
                time.sleep(0.02)
            busy = httpx.post(f"{url}/collections/c/search", json=search_body(0))
            health = httpx.get(f"{url}/health")
        written = [p.result(timeout=30) for p in posts]
        after = httpx.post(f"{url}/collections/c/search", json=search_body(50))
    store.close()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"] == "ServiceBusyError" and "max_inflight" in busy.json()["message"]
    assert health.status_code == 200
    assert [w.json()["written"] for w in written] == [GROUP, GROUP]
    assert after.status_code == 200 and len(after.json()["hits"]) == GROUP


def test_100_oversized_requests_get_413_while_searches_go_on(tmp_path: Path) -> None:
    store = store_with_groups(tmp_path / "s")
    app = create_app(store, Settings(auth=False, max_body_bytes=50_000))
    big = b'{"records": [' + b" " * 60_000 + b"]}"
    stop = threading.Event()
    searches: list[int] = []
    with running(app) as url:

        def search() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    searches.append(
                        http.post("/collections/c/search", json=search_body(1)).status_code
                    )

        def oversized(_: int) -> int:
            headers = {"content-type": "application/json"}
            r = httpx.post(f"{url}/collections/c/records", content=big, headers=headers, timeout=30)
            return r.status_code

        searcher = threading.Thread(target=search)
        searcher.start()
        time.sleep(0.2)
        before = len(searches)
        with cf.ThreadPoolExecutor(100) as pool:
            statuses = list(pool.map(oversized, range(100)))
        during = len(searches) - before
        time.sleep(0.2)
        stop.set()
        searcher.join(timeout=30)
        assert store.collection("c").count() == 12 * GROUP  # nothing of them written
    store.close()
    assert statuses == [413] * 100
    assert during > 0 and set(searches) == {200}


def test_jobs_are_kept_across_a_restart_and_open_ones_marked_interrupted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    store = mmstore.open(path)
    col = store.create_collection("c", encoders=VEC)
    col.ingest([{"id": f"r{i}", "label": f"k{i % 2}", "e": vector(i % 2, 1, i)} for i in range(40)])
    app = create_app(store, Settings(auth=False))
    with running(app) as url:
        job = httpx.post(
            f"{url}/collections/c/heads",
            json={"name": "h", "kind": "classifier", "inputs": ["e"], "epochs": 2},
        ).json()["job"]
        app.state.jobs.join(timeout=60)
        first = httpx.get(f"{url}/jobs/{job}").json()
    left = Job(id="9-left0running", kind="train_head", collection="c", status="running")
    JobLog(store.catalog).save(left)  # as a service killed mid-training leaves it
    store.close()
    with mmstore.open(path) as store, running(create_app(store, Settings(auth=False))) as url:
        again = httpx.get(f"{url}/jobs/{job}").json()
        interrupted = httpx.get(f"{url}/jobs/{left.id}").json()
        unknown = httpx.get(f"{url}/jobs/nope")
        client = mmstore.Client(url)
        with pytest.raises(mmstore.JobInterruptedError, match="start the job again"):
            client.wait(left.id, timeout=10)
    assert first["status"] == "done" and first["collection"] == "c", first
    assert again == first
    assert interrupted["status"] == "interrupted" and "finished" in interrupted
    assert interrupted["error"]["error"] == "JobInterruptedError"
    assert unknown.status_code == 404 and "kept in the store's catalog" in unknown.text


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    """``mmstore serve`` gets SIGTERM while an ingest of 1,000 MiniLM-embedded texts is
    in flight: the ingest is answered 200 with every record written, the process exits 0,
    and the store reopens with the records."""
    path = tmp_path / "s"
    with mmstore.open(path) as store:
        store.create_collection("t", encoders={"text": "sentence_transformers"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mmstore", "serve", str(path), "--port", str(port), "--no-auth"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while not answers(url):
            assert proc.poll() is None and time.monotonic() < deadline, "service did not start"
            time.sleep(0.2)
        warm = [{"id": "w", "text": "warm the model up"}]
        first = httpx.post(f"{url}/collections/t/records", json={"records": warm}, timeout=120)
        assert first.status_code == 200, first.text
        texts = [
            {"id": f"r{i}", "text": f"record number {i} about topic {i % 17}"} for i in range(1000)
        ]
        with cf.ThreadPoolExecutor(1) as pool:
            body = {"records": texts}
            sent = pool.submit(httpx.post, f"{url}/collections/t/records", json=body, timeout=120)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            answer = sent.result(timeout=120)
            answered = time.monotonic()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answer.status_code == 200 and answer.json()["written"] == 1000
    assert answered > signalled, "the ingest was answered before the signal: not in flight"
    with mmstore.open(path, read_only=True) as store:
        assert store.collection("t").count() == 1001
