"""The HTTP service against a real uvicorn server on a loopback port, driven with httpx:
collections, JSON ingest, search (values, vector, record, where), get, delete, multipart
audio ingest and search by audio bytes, head training as a job then predict, health,
metrics, OpenAPI; errors 404/409/413/422 with JSON bodies; 413 before the body is read.
Auth is off here (Settings(auth=False)); keys are tested with auth.py."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

import mmstore
from mmstore.service import Settings
from mmstore.service.app import create_app, decode_values, jsonable
from tests.servers import running

VEC = {"emb": {"encoder": "precomputed", "modality": "vector", "dim": 8}}
SR = 16_000
N = 120


def cluster_records(n: int = N) -> list[dict[str, Any]]:
    centers = np.random.default_rng(7).normal(size=(3, 8)) * 4
    rng = np.random.default_rng(0)
    return [
        {
            "id": f"r{i}",
            "label": f"k{i % 3}",
            "ts": f"2024-01-{1 + i % 28:02d}T00:00:00",
            "meta": {"n": i, "group": "even" if i % 2 == 0 else "odd"},
            "emb": (centers[i % 3] + rng.normal(size=8) * 0.3).round(4).tolist(),
        }
        for i in range(n)
    ]


def wav(freq: float, seconds: float = 1.0) -> bytes:
    t = np.arange(int(seconds * SR)) / SR
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    path = tmp_path_factory.mktemp("svc") / "store"
    store = mmstore.open(path)
    settings = Settings(auth=False, max_body_bytes=200_000, max_batch=200, max_k=50)
    app = create_app(store, settings)
    try:
        with running(app) as url:
            yield url, app
    finally:
        store.close()


@pytest.fixture(scope="module")
def http(server: tuple[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def vecs(http: httpx.Client) -> str:
    r = http.post("/collections", json={"name": "vecs", "encoders": VEC})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "vecs"
    r = http.post("/collections/vecs/records", json={"records": cluster_records()})
    assert r.status_code == 200, r.text
    assert r.json()["written"] == N and r.json()["rejected"] == []
    return "vecs"


# -- health, openapi, collections -----------------------------------------------------
def test_health_reports_limits(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "ok" and body["version"] == mmstore.__version__
    assert body["limits"]["max_body_bytes"] == 200_000
    assert body["limits"]["max_batch"] == 200 and body["limits"]["max_k"] == 50


def test_openapi_lists_every_route(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    expected = {
        ("get", "/health"),
        ("get", "/metrics"),
        ("get", "/collections"),
        ("post", "/collections"),
        ("get", "/collections/{c}"),
        ("delete", "/collections/{c}"),
        ("post", "/collections/{c}/records"),
        ("post", "/collections/{c}/records/media"),
        ("get", "/collections/{c}/records"),
        ("post", "/collections/{c}/records/delete"),
        ("post", "/collections/{c}/search"),
        ("post", "/collections/{c}/search_many"),
        ("post", "/collections/{c}/heads"),
        ("get", "/jobs/{id}"),
        ("get", "/collections/{c}/heads"),
        ("post", "/collections/{c}/heads/{name}/predict"),
    }
    found = {(m, p) for p, ops in paths.items() for m in ops}
    assert found == expected
    media = paths["/collections/{c}/records/media"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in media


def test_collections_create_list_info_drop(http: httpx.Client, vecs: str) -> None:
    assert "vecs" in http.get("/collections").json()["collections"]
    info = http.get("/collections/vecs").json()
    assert info["records"] == N and info["fields"][0]["vectors"] == N
    r = http.post("/collections", json={"name": "vecs", "encoders": VEC})
    assert r.status_code == 409 and r.json()["error"] == "AlreadyExistsError"
    r = http.post("/collections", json={"name": "vecs", "encoders": VEC, "exist_ok": True})
    assert r.status_code == 201
    r = http.post("/collections", json={"name": "tmp", "encoders": VEC})
    assert r.status_code == 201
    assert http.delete("/collections/tmp").json() == {"dropped": "tmp"}
    assert "tmp" not in http.get("/collections").json()["collections"]
    r = http.get("/collections/tmp")
    assert r.status_code == 404
    assert r.json()["error"] == "UnknownNameError" and "vecs" in r.json()["message"]
    r = http.post("/collections", json={"name": "bad", "encoders": {"x": {"encoder": "nope"}}})
    assert r.status_code in (400, 404) and r.json()["message"]


# -- records and search ----------------------------------------------------------------
def test_get_and_missing_ids(http: httpx.Client, vecs: str) -> None:
    recs = http.get("/collections/vecs/records", params={"ids": "r1,r0"}).json()["records"]
    assert [r["id"] for r in recs] == ["r1", "r0"]
    assert recs[1]["label"] == "k0" and recs[1]["meta"] == {"n": 0, "group": "even"}
    assert recs[1]["ts"].startswith("2024-01-01")
    r = http.get("/collections/vecs/records", params={"ids": "r1,zz9"})
    assert r.status_code == 404 and "zz9" in r.json()["message"]
    assert http.get("/collections/vecs/records").status_code == 422


def test_search_forms(http: httpx.Client, vecs: str) -> None:
    query = cluster_records()[4]["emb"]  # a k1 record
    r = http.post("/collections/vecs/search", json={"vector": query, "k": 5})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 5 and hits[0]["id"] == "r4"
    assert {h["label"] for h in hits} == {"k1"}
    assert set(hits[0]) == {"id", "score", "field", "modality", "label", "ts", "meta", "values"}
    assert hits[0]["ts"].startswith("2024-01-05") and hits[0]["modality"] == "vector"
    # a field value, as given in JSON
    same = http.post("/collections/vecs/search", json={"values": {"emb": query}, "k": 5})
    assert [h["id"] for h in same.json()["hits"]] == [h["id"] for h in hits]
    # by stored record (itself excluded), with a filter
    r = http.post(
        "/collections/vecs/search", json={"record": "r4", "k": 10, "where": {"meta.group": "odd"}}
    )
    assert r.status_code == 200, r.text
    got = r.json()["hits"]
    assert got and "r4" not in [h["id"] for h in got]
    assert all(h["meta"]["group"] == "odd" and h["label"] == "k1" for h in got)


def test_search_errors(http: httpx.Client, vecs: str) -> None:
    r = http.post("/collections/vecs/search", json={"vector": [0.0] * 8, "k": 51})
    assert r.status_code == 422 and "max_k" in r.json()["message"]
    r = http.post("/collections/vecs/search", json={"vector": [0.0] * 8, "k": 0})
    assert r.status_code == 422 and r.json()["error"] == "ValidationError"
    r = http.post("/collections/vecs/search", json={"vector": [0.0] * 3})
    assert 400 <= r.status_code < 500 and r.json()["message"]
    r = http.post("/collections/nope/search", json={"vector": [0.0] * 8})
    assert r.status_code == 404
    r = http.post("/collections/vecs/search", json={"values": {"k": 3}})
    assert r.status_code == 422
    r = http.post(
        "/collections/vecs/search",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    r = http.post("/collections/vecs/search", json={"vector": [0.0] * 8, "bogus": 1})
    assert r.status_code == 422


def test_ingest_errors_and_skip(http: httpx.Client, vecs: str) -> None:
    bad = [{"id": "b1", "emb": [1.0] * 8}, {"id": "b2", "emb": [1.0] * 3}]
    r = http.post("/collections/vecs/records", json={"records": bad})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "RecordError" and body["record"] == "b2" and body["field"] == "emb"
    assert http.get("/collections/vecs/records", params={"ids": "b1"}).status_code == 404
    r = http.post("/collections/vecs/records", json={"records": bad, "on_error": "skip"})
    assert r.status_code == 200
    assert r.json()["written"] == 1 and r.json()["rejected"][0]["id"] == "b2"
    # too many records: 413 naming the limit
    many = [{"id": f"m{i}", "emb": [0.0] * 8} for i in range(201)]
    r = http.post("/collections/vecs/records", json={"records": many})
    assert r.status_code == 413 and "max_batch" in r.json()["message"]
    r = http.post("/collections/vecs/records", json={"recs": []})
    assert r.status_code == 422
    assert http.post("/collections/vecs/records/delete", json={"ids": ["b1"]}).json() == {
        "deleted": 1
    }


def test_delete(http: httpx.Client) -> None:
    assert http.post("/collections", json={"name": "del", "encoders": VEC}).status_code == 201
    recs = cluster_records(10)
    assert http.post("/collections/del/records", json={"records": recs}).status_code == 200
    r = http.post("/collections/del/records/delete", json={"ids": ["r0", "r1", "nope"]})
    assert r.json() == {"deleted": 2}
    assert http.get("/collections/del").json()["records"] == 8
    hits = http.post("/collections/del/search", json={"vector": recs[0]["emb"], "k": 10})
    assert "r0" not in [h["id"] for h in hits.json()["hits"]]


# -- body limit ------------------------------------------------------------------------
def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send raw bytes; read until the server closes the connection (it does after a 413)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_413_from_content_length_before_reading(server: tuple[str, Any]) -> None:
    url = server[0]
    head = (
        b"POST /collections/vecs/records HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
    )
    start = time.monotonic()
    status, body = raw_request(url, head)  # the body is never sent: answered without it
    assert status == 413 and time.monotonic() - start < 5
    assert json.loads(body)["error"] == "PayloadTooLarge"


def test_413_while_streaming_without_content_length(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"records": ['
        for _ in range(100):
            yield b'{"id": "x", "emb": [' + b"0.0," * 1000 + b"0.0]},"
        yield b"]}"

    r = http.post(
        "/collections/vecs/records", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "200000" in r.json()["message"]


# -- media -----------------------------------------------------------------------------
def test_multipart_audio_ingest_and_search(http: httpx.Client) -> None:
    r = http.post(
        "/collections",
        json={
            "name": "sounds",
            "encoders": {"audio": {"encoder": "logmel"}},
            "options": {"audio": {"max_seconds": 5.0}},
        },
    )
    assert r.status_code == 201, r.text
    records = [{"id": f"s{f}", "label": "hi" if f > 1000 else "lo"} for f in (220, 440, 1760, 3520)]
    files = [
        (f"{r['id']}/audio", (f"{r['id']}.wav", wav(float(r["id"][1:])), "audio/wav"))
        for r in records
    ]
    r = http.post(
        "/collections/sounds/records/media", data={"records": json.dumps(records)}, files=files
    )
    assert r.status_code == 200, r.text
    assert r.json()["written"] == 4
    got = http.get("/collections/sounds/records", params={"ids": "s440"}).json()["records"][0]
    assert got["audio"]["sample_rate"] == SR
    # search by audio bytes, base64 in JSON
    q = {"$base64": base64.b64encode(wav(1760)).decode()}
    r = http.post("/collections/sounds/search", json={"values": {"audio": q}, "k": 2})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["id"] == "s1760"
    # a part naming no record, a malformed records field
    r = http.post(
        "/collections/sounds/records/media",
        data={"records": "[]"},
        files=[("zz/audio", ("a.wav", b"x", "audio/wav"))],
    )
    assert r.status_code == 422 and "zz" in r.json()["message"]
    r = http.post(
        "/collections/sounds/records/media",
        data={"records": "{"},
        files=[("s1/audio", ("a.wav", b"x", "audio/wav"))],
    )
    assert r.status_code == 422
    r = http.post("/collections/sounds/records/media", json={"records": []})
    assert r.status_code == 422
    bad = {"$base64": "!!!"}
    r = http.post("/collections/sounds/search", json={"values": {"audio": bad}})
    assert r.status_code == 400 and "base64" in r.json()["message"]


# -- heads -----------------------------------------------------------------------------
def finished_job(http: httpx.Client, job: str, seconds: float = 50) -> dict[str, Any]:
    """Poll a job until it is done or failed; a job still running after ``seconds`` fails
    the test instead of hanging it."""
    deadline = time.monotonic() + seconds
    while (status := http.get(f"/jobs/{job}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return dict(status)


def test_train_head_job_then_predict(http: httpx.Client, vecs: str) -> None:
    r = http.post(
        "/collections/vecs/heads",
        json={
            "name": "clf",
            "kind": "classifier",
            "inputs": ["emb"],
            "epochs": 30,
            "patience": 8,
            "batch_size": 32,
        },
    )
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    status = finished_job(http, job)
    assert status["status"] == "done", status
    assert status["report"]["metrics"]["accuracy"] > 0.9
    assert status["report"]["classes"] == ["k0", "k1", "k2"]
    heads = http.get("/collections/vecs/heads").json()["heads"]
    assert [h["name"] for h in heads] == ["clf"]
    recs = cluster_records(6)
    new = {"id": "new", "emb": recs[5]["emb"]}
    r = http.post("/collections/vecs/heads/clf/predict", json={"records": ["r0", "r1", new]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == ["k0", "k1", "k2"]
    r = http.post("/collections/vecs/heads/nope/predict", json={"records": ["r0"]})
    assert r.status_code == 404
    assert http.get("/jobs/nope").status_code == 404
    wrong = http.get(f"/jobs/{job.split('-')[0]}-x").json()  # issue 17, bug 5: id, no hash
    assert wrong["error"] == "NotFoundError" and "holds 1 job(s)" in wrong["message"]
    assert "available: (none)" not in wrong["message"]
    # a job that fails says why
    r = http.post("/collections/vecs/heads", json={"name": "bad", "inputs": ["nofield"]})
    assert r.status_code == 202
    status = finished_job(http, r.json()["job"])
    assert status["status"] == "failed" and status["error"]["message"]
    assert http.post("/collections/nope/heads", json={"name": "x"}).status_code == 404


# -- metrics, helpers ------------------------------------------------------------------
def test_metrics_count_routes_and_statuses(http: httpx.Client, vecs: str) -> None:
    http.get("/collections/nope")
    m = http.get("/metrics").json()
    assert m["requests"]["GET /collections/{c}"]["404"] >= 1
    assert m["errors"]["GET /collections/{c}"] >= 1
    lat = m["latency_ms"]["GET /health"]
    assert lat["count"] >= 1 and 0 <= lat["p50"] <= lat["p99"]


def test_json_helpers() -> None:
    assert decode_values({"a": [{"$base64": "aGk="}], "b": 1}) == {"a": [b"hi"], "b": 1}
    assert jsonable({"b": b"hi", "x": np.float32(1.5), "n": float("nan")}) == {
        "b": {"$base64": "aGk="},
        "x": 1.5,
        "n": None,
    }
    with pytest.raises(mmstore.InvalidInputError):
        decode_values({"$base64": "###"})


def test_settings_and_cli_registration(tmp_path: Path) -> None:
    import click
    from click.testing import CliRunner

    from mmstore.cli.serve import serve

    with pytest.raises(ValueError):
        Settings(max_k=0)

    @click.group()
    def group() -> None: ...

    group.add_command(serve)
    out = CliRunner().invoke(group, ["serve", "--help"])
    assert out.exit_code == 0 and "--max-body-bytes" in out.output


# -- auth wiring (auth.py is another module's; here only that every route but /health asks)
def test_every_route_but_health_needs_a_key(tmp_path: Path) -> None:
    pytest.importorskip("mmstore.service.auth")
    from fastapi.testclient import TestClient

    from mmstore.service.keys import KeyStore

    with mmstore.open(tmp_path / "s") as store:
        store.create_collection("a", encoders=VEC)
        store.create_collection("b", encoders=VEC)
        app = create_app(store, Settings(auth=True))
        assert isinstance(app.state.keys, KeyStore)
        _, reader = app.state.keys.create("reader", "read", ["a"])
        client = TestClient(app)
        assert client.get("/health").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        for path, ops in paths.items():
            url = path.format(c="a", id="j", name="h")
            for method in ops:
                r = client.request(method, url, json={})
                want = 200 if path == "/health" else 401
                assert r.status_code == want, (method, path, r.status_code)
                if want == 401:
                    assert r.json()["error"] == "Unauthorized" and r.json()["message"]
        auth = {"Authorization": f"Bearer {reader}"}
        assert client.get("/collections", headers=auth).json() == {"collections": ["a"]}
        assert client.get("/collections/a", headers=auth).status_code == 200
        assert client.get("/collections/b", headers=auth).status_code == 403
        r = client.post("/collections/a/records", headers=auth, json={"records": []})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden"
        assert client.get("/metrics", headers=auth).status_code == 403
