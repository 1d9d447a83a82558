"""The service's value limits (text length, image pixels, audio duration) over a real
server: /health reports them; a record over one is answered 413 naming the record and the
field, and nothing of the request is written; with ``on_error=skip`` only that record is
left out and listed; a query value over one is a 413 too; values within pass.

Bad inputs tried: a text one character over the limit (ingest, search, predict), a PNG of
3000x3000 (small compressed, 9 Mpx: decided from the header), a 3.5 s WAV against a 3 s
limit (multipart and base64), a declared-huge PNG header that Pillow calls a bomb, bytes
that are no image (passed on: the modality names the problem)."""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mmstore_openclip.testing import random_encoder
from PIL import Image

import mmstore
from mmstore.service import Settings
from mmstore.service import limits as service_limits
from mmstore.service.app import create_app
from tests.conftest import FakePlugin
from tests.ranking import assert_same_ranking
from tests.servers import running
from tests.test_image import TINY, encoded
from tests.test_service import wav

LIMITS = Settings(auth=False, max_text_chars=50, max_image_pixels=1_000_000, max_audio_seconds=3.0)


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> dict[str, str]:
    return {"$base64": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, mmstore.Store]]:
    folder = tmp_path_factory.mktemp("limits")
    clip = random_encoder(folder, TINY)
    store = mmstore.open(folder / "store", plugins=[FakePlugin()])
    store.create_collection(
        "mixed",
        encoders={
            "text": {"encoder": "hash_text", "dim": 32},
            "photo": {**clip, "modality": "image"},
            "audio": {"encoder": "logmel"},
        },
    )
    try:
        with running(create_app(store, LIMITS)) as base:
            yield base, store
    finally:
        store.close()


@pytest.fixture(scope="module")
def http(served: tuple[str, mmstore.Store]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0], timeout=60) as c:
        yield c


def count(http: httpx.Client) -> int:
    return int(http.get("/collections/mixed").json()["records"])


def test_health_reports_every_limit(http: httpx.Client) -> None:
    got = http.get("/health").json()["limits"]
    assert got["max_text_chars"] == 50 and got["max_image_pixels"] == 1_000_000
    assert got["max_audio_seconds"] == 3.0
    assert {"max_body_bytes", "max_batch", "max_k"} <= set(got)


@pytest.mark.parametrize(
    ("field", "over", "within", "words"),
    [
        ("text", "x" * 51, "y" * 50, "max_text_chars=50"),
        ("photo", b64(png(3000, 3000)), b64(png(64, 64)), "max_image_pixels=1,000,000"),
        ("audio", b64(wav(440, 3.5)), b64(wav(440, 2.0)), "max_audio_seconds=3"),
    ],
)
def test_a_value_over_a_limit_is_413_naming_record_and_field(
    http: httpx.Client, field: str, over: Any, within: Any, words: str
) -> None:
    before = count(http)
    records = [{"id": f"ok-{field}", field: within}, {"id": f"big-{field}", field: over}]
    r = http.post("/collections/mixed/records", json={"records": records})
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "LimitExceededError"
    assert body["record"] == f"big-{field}" and body["field"] == field
    assert words in body["message"]
    assert count(http) == before  # nothing of the request written
    r = http.post("/collections/mixed/records", json={"records": records, "on_error": "skip"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["written"] == 1 and report["received"] == 2
    assert [x["id"] for x in report["rejected"]] == [f"big-{field}"]
    assert count(http) == before + 1
    # the same value as a query
    r = http.post("/collections/mixed/search", json={"values": {field: over}, "k": 1})
    assert r.status_code == 413 and r.json()["field"] == field
    r = http.post("/collections/mixed/search", json={"values": {field: within}, "k": 1})
    assert r.status_code == 200, r.text


def test_multipart_audio_over_the_limit(http: httpx.Client) -> None:
    records = [{"id": "m1"}, {"id": "m2"}]
    files = [
        ("m1/audio", ("a.wav", wav(300, 1.0), "audio/wav")),
        ("m2/audio", ("b.wav", wav(300, 4.0), "audio/wav")),
    ]
    r = http.post(
        "/collections/mixed/records/media", data={"records": json.dumps(records)}, files=files
    )
    assert r.status_code == 413 and r.json()["record"] == "m2"
    assert http.get("/collections/mixed/records", params={"ids": "m1"}).status_code == 404


def test_probes_read_headers_only() -> None:
    s = Settings(max_image_pixels=10, max_audio_seconds=0.5)
    assert "pixels" in (service_limits.problem("image", png(4, 4), s) or "")
    assert service_limits.problem("image", png(3, 3), s) is None
    assert service_limits.problem("image", b"not an image", s) is None  # the modality decides
    assert service_limits.problem("audio", b"not audio", s) is None
    assert service_limits.problem("tabular", "x" * 10**6, s) is None  # no limit for it

    # a PNG declaring 100000 x 100000 pixels with no pixel data: Pillow's bomb check
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    size = (100_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", size) + chunk(b"IDAT", zlib.compress(b""))
    why = service_limits.problem("image", bomb + chunk(b"IEND", b""), Settings())
    assert why is not None and "max_image_pixels" in why


def test_cross_modal_search_over_http_equals_embedded(
    http: httpx.Client, served: tuple[str, mmstore.Store]
) -> None:
    """Text into the image field (OpenCLIP's text tower) and an image by bytes: the same
    hits over HTTP as through the embedded collection the service holds. The photos differ
    (solid squares of one colour would all score alike, and their order be rounding)."""
    records = [{"id": f"px{i}", "photo": b64(encoded(i, size=(16 + i, 16 + i)))} for i in range(6)]
    assert http.post("/collections/mixed/records", json={"records": records}).status_code == 200
    col = served[1].collection("mixed")
    for values, embedded in (
        ({"text": "a red square"}, {"text": "a red square"}),
        ({"photo": b64(png(20, 20))}, {"photo": png(20, 20)}),
    ):
        r = http.post("/collections/mixed/search", json={"values": values, "target": "photo"})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        want = col.search(target="photo", k=10, **embedded)
        assert len(hits) >= 6 and {h["modality"] for h in hits} == {"image"}
        got = ([h["id"] for h in hits], [h["score"] for h in hits])
        assert_same_ranking(*got, want.ids, want.scores)
