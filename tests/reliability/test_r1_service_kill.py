"""R1 through the service: ``mmstore serve`` SIGKILLed while 4 clients ingest over HTTP
loses no acknowledged record and leaves no request half applied.

Each round starts the service on the same store, lets 4 client threads post batches of
10 records (ids and metadata naming the client and the batch) and SIGKILLs it at a
random moment 0.4-1.6 s in. The store is then opened in this process, which recovers
it, and checked: every batch answered 200 is there whole, with its metadata and its
vectors found by search; every batch sent, answered or not, is all there or not at all;
``verify`` finds the index equal to the catalog. The next round writes on top.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

import mmstore
from tests.reliability.figures import record
from tests.servers import answers, free_port

DIM, BATCH, CLIENTS, ROUNDS = 8, 10, 4, 3
VEC = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}


def vector(t: int, b: int, i: int) -> list[float]:
    rng = random.Random(f"{t}-{b}-{i}")
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def batch(r: int, t: int, b: int) -> list[dict[str, Any]]:
    tag = f"{r}.{t}.{b}"
    return [
        {"id": f"{tag}-{i}", "e": vector(t, b + 1000 * r, i), "meta": {"tag": tag}}
        for i in range(BATCH)
    ]


def serve(path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mmstore", "serve", str(path), "--port", str(port), "--no-auth"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"])
    deadline = time.monotonic() + 60
    while not answers(url):
        assert proc.poll() is None and time.monotonic() < deadline, "service did not start"
        time.sleep(0.1)
    return proc, url


def clients(
    url: str, r: int, acked: list[str], sent: list[str], errors: list[str]
) -> list[threading.Thread]:
    def post(t: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for b in range(10_000):
                records = batch(r, t, b)
                sent.append(records[0]["meta"]["tag"])
                try:
                    answer = http.post("/collections/c/records", json={"records": records})
                except httpx.HTTPError:
                    return  # the service is gone
                if answer.status_code != 200 or answer.json()["written"] != BATCH:
                    errors.append(f"{answer.status_code}: {answer.text[:200]}")
                    return
                acked.append(records[0]["meta"]["tag"])

    threads = [threading.Thread(target=post, args=(t,)) for t in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads


def check(path: Path, acked: list[str], sent: list[str]) -> tuple[int, int]:
    """Every acknowledged batch whole and found; every batch sent whole or absent."""
    whole = 0
    with mmstore.open(path) as store:
        col = store.collection("c")
        for tag in sent:
            n = col.count({"tag": tag})
            assert n in (0, BATCH), f"batch {tag} half there: {n} of {BATCH} records"
            whole += n == BATCH
        for tag in acked:
            assert col.count({"tag": tag}) == BATCH, f"acknowledged batch {tag} lost"
            r, t, b = (int(x) for x in tag.split("."))
            first = batch(r, t, b)[0]
            hits = col.search(vector=first["e"], k=1)
            assert hits.ids == [first["id"]], f"batch {tag}: its vector finds {hits.ids}"
        assert all(f["ok"] for f in col.verify())
    return whole, len(sent)


def test_service_killed_during_writes_from_4_clients_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    with mmstore.open(path) as store:
        store.create_collection("c", encoders=VEC, index={"ann_threshold": 100})
    rng = random.Random(7)
    totals = {"acked": 0, "sent": 0, "whole": 0}
    for r in range(ROUNDS):
        proc, url = serve(path)
        acked: list[str] = []
        sent: list[str] = []
        errors: list[str] = []
        threads = clients(url, r, acked, sent, errors)
        time.sleep(rng.uniform(0.4, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for t in threads:
            t.join(timeout=60)
        assert errors == [], errors[:3]
        assert acked, f"round {r}: no batch was answered before the kill"
        whole, n = check(path, acked, sent)
        totals["acked"] += len(acked)
        totals["sent"] += n
        totals["whole"] += whole
    record(
        "R1",
        "test_service_killed_during_writes_from_4_clients_loses_nothing_acknowledged",
        f"mmstore serve SIGKILLed {ROUNDS} times while 4 HTTP clients ingested batches of "
        f"{BATCH}: {totals['acked']} acknowledged batches all there and found by their "
        f"vectors, {totals['sent']} sent, {totals['whole']} there whole, 0 half there; "
        "verify ok after each reopen",
    )
