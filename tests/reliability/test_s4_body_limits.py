"""S4: a request body over the limit is answered 413 before it is read, on every route
that takes a body (a raw socket sends only the headers, with a Content-Length of 1 GB, and
gets the answer without sending a byte of the body); with a key and without one (the key
check, which comes first, then answers 401 without reading it either); the limits are
listed by /health and follow the settings."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import mmstore
from mmstore.service import Settings
from mmstore.service.app import create_app
from mmstore.service.keys import KeyStore
from tests.reliability.figures import record
from tests.servers import running
from tests.test_service import raw_request

ROUTES = [
    "/collections",
    "/collections/c/records",
    "/collections/c/records/media",
    "/collections/c/records/delete",
    "/collections/c/search",
    "/collections/c/heads",
    "/collections/c/heads/h/predict",
]
LIMITS = Settings(max_body_bytes=4096, max_batch=7, max_k=9, max_text_chars=11)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    store = mmstore.open(Path(tmp_path_factory.mktemp("s4")) / "s")
    _, key = KeyStore(store.catalog).create("k", ["admin"], "*")
    try:
        with running(create_app(store, LIMITS)) as url:
            yield url, key
    finally:
        store.close()


def test_oversized_bodies_are_refused_before_they_are_read(served: tuple[str, str]) -> None:
    url, key = served
    seen = {}
    for route in ROUTES:
        for auth in (f"Authorization: Bearer {key}\r\n", ""):
            head = (
                f"POST {route} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                "Content-Length: 1000000000\r\n\r\n"
            ).encode()
            start = time.monotonic()
            status, body = raw_request(url, head)
            assert time.monotonic() - start < 5
            assert status == (413 if auth else 401), (route, status, body)
            seen[status] = seen.get(status, 0) + 1
            assert json.loads(body)["error"] in ("PayloadTooLarge", "Unauthorized")
    limits = httpx.get(f"{url}/health").json()["limits"]
    assert limits["max_body_bytes"] == 4096 and limits["max_batch"] == 7
    assert limits["max_k"] == 9 and limits["max_text_chars"] == 11
    assert {"max_image_pixels", "max_audio_seconds"} <= set(limits)
    record(
        "S4",
        "test_oversized_bodies_are_refused_before_they_are_read",
        f"{len(ROUTES)} routes with a body: {seen.get(413, 0)} x 413 with a key and "
        f"{seen.get(401, 0)} x 401 without, each answered before any of its 1 GB body was "
        "sent; 7 limits listed by /health, each following the settings",
    )
