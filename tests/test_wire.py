"""The wire codec (mmstore/wire.py) and the client's ingest split to the service's limits.

Round trips: arrays of every accepted dtype, big-endian, 0-d, empty and 4-d arrays, a
tuple inside a record, PIL images (as PNG), paths, datetimes. Bad forms tried, in the
codec and over HTTP (each a 400 InvalidInputError that says what is wrong, never a 500):
an object dtype, a shape that does not match the bytes, a negative or boolean size, five
dimensions, bad base64, extra keys, a ``$tuple`` that is not a list; and a vector over
float32's range. The split: 12 records to a service of ``max_batch=5`` (three requests,
one report, a record without an id named by its position in the whole call, and the
error saying what the earlier requests wrote), and records larger than ``max_body_bytes``
together."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import mmstore
from mmstore import wire
from mmstore.service import Settings
from mmstore.service.app import create_app
from tests.servers import running

VEC = {"emb": {"encoder": "precomputed", "modality": "vector", "dim": 4}}


@pytest.mark.parametrize("dtype", sorted(wire.ARRAY_DTYPES))
def test_arrays_of_every_dtype_come_back_bit_for_bit(dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 2 == 0) if dtype == "bool" else None
    array = np.arange(24, dtype=dtype).reshape(2, 3, 4) if array is None else array
    form = wire.encode(array)
    assert set(form) == {"$array", "dtype", "shape"}
    back = wire.decode(form)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes() and back.flags.writeable


def test_odd_arrays_and_other_values_round_trip() -> None:
    big_endian = np.array([1.5, -2.25], dtype=">f4")
    assert wire.decode(wire.encode(big_endian)).tolist() == [1.5, -2.25]
    for array in (np.array(3.5, np.float32), np.zeros((0, 8), np.float32)):
        back = wire.decode(wire.encode(array))
        assert back.shape == array.shape and back.dtype == array.dtype
    samples = np.linspace(-1, 1, 10, dtype=np.float32)
    record = {"id": "a", "audio": (samples, 16000), "when": dt.datetime(2024, 1, 2, 3, 4)}
    back = wire.decode(wire.encode(record))
    assert isinstance(back["audio"], tuple) and back["audio"][1] == 16000
    assert np.array_equal(back["audio"][0], samples) and back["when"] == "2024-01-02T03:04:00"
    assert wire.encode(Path("/x/y.png")) == "/x/y.png"
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    png = wire.decode(wire.encode(image))
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
    assert wire.encode(np.array(["a", "b"])) == ["a", "b"]  # not a numeric dtype: a list


def _form(**change: Any) -> dict[str, Any]:
    form: dict[str, Any] = wire.encode(np.ones(4, np.float32))
    return {k: v for k, v in (form | change).items() if v is not None}


BAD_FORMS = [
    (_form(dtype="object"), "dtype is one of"),
    (_form(shape=[5]), "holds 20 bytes, got 16"),
    (_form(shape=[-4]), "sizes >= 0"),
    (_form(shape=[True, 4]), "sizes >= 0"),
    (_form(shape=[1, 1, 1, 1, 4]), "at most 4"),
    (_form(**{"$array": "###"}), "invalid \\$base64"),
    (_form(extra=1), "has the keys"),
    (_form(dtype=None), "has the keys"),
    ({"$tuple": "ab"}, "\\$tuple"),
    ({"$base64": "aGk=", "more": 1}, "no other keys"),
]


@pytest.mark.parametrize(("form", "message"), BAD_FORMS)
def test_a_malformed_form_says_what_is_wrong(form: dict[str, Any], message: str) -> None:
    with pytest.raises(mmstore.InvalidInputError, match=message):
        wire.decode({"values": [form]})


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = mmstore.open(tmp_path_factory.mktemp("wire") / "store")
    settings = Settings(auth=False, max_batch=5, max_body_bytes=4000)
    try:
        with running(create_app(store, settings)) as url:
            yield url
    finally:
        store.close()


@pytest.mark.parametrize(("form", "message"), BAD_FORMS)
def test_a_malformed_form_over_http_is_a_400(
    small: str, form: dict[str, Any], message: str
) -> None:
    with mmstore.Client(small) as client:
        if "bad" not in client.collections():
            client.create_collection("bad", encoders=VEC)
    for path, body in [
        ("search", {"values": {"emb": form}}),
        ("records", {"records": [{"id": "x", "emb": form}]}),
    ]:
        r = httpx.post(f"{small}/collections/bad/{path}", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "InvalidInputError" and r.json()["message"]


def test_a_vector_past_float32_is_refused_not_a_500(small: str) -> None:
    with mmstore.Client(small) as client:
        col = client.create_collection("huge", encoders=VEC, exist_ok=True)
        col.ingest([{"id": "a", "emb": [1.0, 0, 0, 0]}])
        with pytest.raises(mmstore.InvalidInputError):
            col.search(vector=[1e300, 0.0, 0.0, 0.0], k=1)
        body = {"vector": wire.encode(np.array([1e300, 0, 0, 0])), "k": 1}
        r = httpx.post(f"{small}/collections/huge/search", json=body)
        assert r.status_code == 400, r.text


def test_an_ingest_larger_than_one_request_is_split(small: str) -> None:
    records = [{"id": f"r{i}", "emb": np.eye(4, dtype=np.float32)[i % 4]} for i in range(12)]
    with mmstore.Client(small) as client:
        col = client.create_collection("split", encoders=VEC)
        report = col.ingest(records)
        assert (report.received, report.written, len(col)) == (12, 12, 12)
        skipped = col.ingest([*records[:7], {"emb": [1, 0, 0, 0]}], on_error="skip")
        assert (skipped.unchanged, [r.id for r in skipped.rejected]) == (7, ["#7"])
        fresh = [{"id": f"n{i}", "emb": [0, 1, 0, 0]} for i in range(6)]
        with pytest.raises(mmstore.RecordError, match="wrote 5") as err:
            col.ingest([*fresh, {"emb": [1, 0, 0, 0]}])
        assert err.value.record_id == "#6"  # the 7th record of the call, 2nd of its request
        assert len(col) == 17  # the first request's five were committed, as the error said


def test_records_larger_than_the_body_limit_together_go_apart(small: str) -> None:
    """Each record is about 1 kB of metadata: five of them exceed max_body_bytes=4000."""
    records = [{"id": f"m{i}", "emb": [1, 0, 0, 0], "meta": {"pad": "x" * 900}} for i in range(5)]
    with mmstore.Client(small) as client:
        col = client.create_collection("wide", encoders=VEC)
        assert col.ingest(records).written == 5 and len(col) == 5
        with pytest.raises(mmstore.MMStoreError, match="HTTP 413"):
            col.ingest([{"id": "huge", "emb": [1, 0, 0, 0], "meta": {"pad": "x" * 5000}}])


def test_the_base64_of_an_array_is_smaller_than_its_json_list() -> None:
    vector = np.random.default_rng(0).normal(size=384).astype(np.float32)
    import json

    compact = len(json.dumps(wire.encode(vector)))
    listed = len(json.dumps(vector.tolist()))
    assert compact < listed / 2.5, (compact, listed)
    assert base64.b64decode(wire.encode(vector)["$array"]) == vector.tobytes()
