"""One suite of collection behaviour, run on both transports: the embedded
``mmstore.Collection`` and ``mmstore.Client(...).collection(...)`` against a real uvicorn
server on a loopback port. Every test takes ``col`` (either one, by the ``transport``
parameter) and asserts the same things of it, so that a call which behaves differently
over HTTP fails here; the tests at the end also compare the two transports' results.

The collection has four fields: text (the fake hash encoder), a precomputed vector, an
image (a tiny CLIP with random weights, loaded from its safetensors file) and audio
(log-mel), the last two with roots so that paths may be given.

Inputs tried on both: dicts, a pandas frame (meta dicts, numpy vector cells), an Arrow
table (a fixed-size-list vector column), numpy vectors, ``(samples, rate)`` audio and
its dict form, WAV bytes, PIL images, uint8 arrays, PNG bytes, paths under the roots.
Bad inputs tried on both: NaN and infinite vectors (a list and an array), NaN in meta, a
non-numeric vector (RecordError naming the record, nothing written), the same skipped, a
record without an id (named by position), a cross-space search (SpaceMismatchError), an
unknown record (NotFoundError), an unknown field (UnknownNameError), weights naming no
query (InvalidInputError), a path outside the roots (the audio plugin's refusal, as a
RecordError), training on an unknown field and of an unknown kind, a predict with an
unknown head, and of an unknown id with on_error="skip"."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import soundfile as sf
from mmstore_openclip.testing import random_encoder
from PIL import Image

import mmstore
from mmstore.api import CollectionAPI
from mmstore.service import Settings
from mmstore.service.app import create_app
from mmstore.testing import FakePlugin
from tests.servers import running

SR = 16_000
TINY = "mms-tiny-api-test"
_names = itertools.count()


def tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, SR, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    return np.clip(base + rng.integers(-20, 20, (8, 8, 3)), 0, 255).astype(np.uint8)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture(seed)).save(buf, "PNG")
    return buf.getvalue()


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return v / np.linalg.norm(v)


def center(label: int) -> np.ndarray:
    """The vector of label ``k0`` or ``k1``: opposite directions."""
    return unit(100) * (1 - 2 * label)


def records(n: int = 12) -> list[dict[str, Any]]:
    """Two labels; each record has text and a vector, every third an image and audio."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        r: dict[str, Any] = {
            "id": f"r{i}",
            "label": f"k{i % 2}",
            "ts": f"2024-01-{1 + i:02d}T00:00:00",
            "meta": {"n": i, "color": ["red", "blue"][i % 2]},
            "text": f"item {i} {['red shoe', 'blue hat'][i % 2]}",
            "emb": center(i % 2) + 0.05 * unit(i),
        }
        if i % 3 == 0:
            r["image"] = picture(i)
            r["audio"] = (tone(220.0 * (1 + i % 4)), SR)
        out.append(r)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("api")
    media = base / "media"
    media.mkdir()
    fields = {
        "text": {"encoder": "hash_text", "dim": 16},
        "emb": {"encoder": "precomputed", "modality": "vector", "dim": 8},
        "image": random_encoder(base, TINY),
        "audio": {"encoder": "logmel"},
    }
    options = {"image": {"roots": [str(media)]}, "audio": {"roots": [str(media)]}}
    embedded = mmstore.open(base / "embedded", plugins=[FakePlugin()])
    served = mmstore.open(base / "served", plugins=[FakePlugin()])
    try:
        with (
            running(create_app(served, Settings(auth=False))) as url,
            mmstore.Client(url) as client,
        ):
            yield {
                "embedded": embedded,
                "client": client,
                "fields": fields,
                "options": options,
                "media": media,
            }
    finally:
        embedded.close()
        served.close()


def make(setup: dict[str, Any], transport: str) -> CollectionAPI:
    """A new collection of the four fields, on the transport asked for."""
    name = f"c{next(_names)}"
    on = setup["embedded"] if transport == "embedded" else setup["client"]
    made: CollectionAPI = on.create_collection(
        name, encoders=setup["fields"], options=setup["options"]
    )
    return made


@pytest.fixture(params=["embedded", "served"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def col(setup: dict[str, Any], transport: str) -> CollectionAPI:
    return make(setup, transport)


@pytest.fixture
def filled(col: CollectionAPI) -> CollectionAPI:
    col.ingest(records())
    return col


# -- ingest -------------------------------------------------------------------------------
def test_ingest_returns_a_report_and_skips_unchanged_records(col: CollectionAPI) -> None:
    report = col.ingest(records())
    assert isinstance(report, mmstore.IngestReport)
    assert (report.received, report.written, report.rejected) == (12, 12, [])
    again = col.ingest(records())
    assert (again.written, again.unchanged) == (0, 12) and again.run_id > report.run_id
    assert len(col) == col.count() == 12


def test_ingest_takes_a_pandas_frame(col: CollectionAPI) -> None:
    frame = pd.DataFrame(
        [{"id": r["id"], "text": r["text"], "emb": r["emb"], "meta": r["meta"]} for r in records()]
    )
    assert col.ingest(frame).written == 12
    assert col.get("r3")[0]["meta"] == {"n": 3, "color": "blue"}
    assert col.search(vector=center(1), target="emb", k=1)[0].id in {"r1", "r3", "r5"}


def test_ingest_takes_an_arrow_table_with_a_vector_column(col: CollectionAPI) -> None:
    rows = records()
    flat = pa.array(np.concatenate([r["emb"] for r in rows]), pa.float32())
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "label": [r["label"] for r in rows],
            "emb": pa.FixedSizeListArray.from_arrays(flat, 8),
        }
    )
    assert col.ingest(table).written == 12
    assert col.get(["r0", "r1"])[1]["label"] == "k1"


def test_a_bad_record_is_named_and_nothing_is_written(col: CollectionAPI) -> None:
    bad = [*records(3), {"id": "bad", "emb": ["x"] * 8}]
    with pytest.raises(mmstore.RecordError) as err:
        col.ingest(bad)
    assert err.value.record_id == "bad" and err.value.field == "emb"
    assert len(col) == 0
    report = col.ingest(bad, on_error="skip")
    assert report.written == 3
    assert [(r.id, r.field) for r in report.rejected] == [("bad", "emb")]
    assert isinstance(report.rejected[0], mmstore.Rejected)


def test_non_finite_values_are_refused_by_record(col: CollectionAPI) -> None:
    with pytest.raises(mmstore.RecordError) as err:
        col.ingest([{"id": "nan", "emb": [float("nan")] * 8}])
    assert err.value.record_id == "nan" and err.value.field == "emb"
    with pytest.raises(mmstore.RecordError) as err:
        col.ingest([{"id": "inf", "emb": np.full(8, np.inf, np.float32)}])
    assert err.value.record_id == "inf"
    with pytest.raises(mmstore.RecordError) as err:
        col.ingest([{"id": "meta", "emb": center(0), "meta": {"x": float("nan")}}])
    assert err.value.record_id == "meta" and len(col) == 0


def test_a_record_without_an_id_is_named_by_its_position(col: CollectionAPI) -> None:
    with pytest.raises(mmstore.RecordError) as err:
        col.ingest([*records(2), {"text": "no id"}])
    assert err.value.record_id == "#2"


# -- media inputs ---------------------------------------------------------------------------
def test_audio_as_array_dict_bytes_and_path_finds_itself(
    col: CollectionAPI, setup: dict[str, Any]
) -> None:
    path = setup["media"] / "a660.wav"
    path.write_bytes(wav(tone(660.0)))
    col.ingest(
        [
            {"id": "arr", "audio": (tone(220.0), SR)},
            {"id": "dict", "audio": {"array": tone(440.0), "sample_rate": SR}},
            {"id": "bytes", "audio": wav(tone(880.0))},
            {"id": "path", "audio": str(path)},
        ]
    )
    assert col.search(audio=(tone(220.0), SR), target="audio", k=1)[0].id == "arr"
    assert col.search(audio=wav(tone(440.0)), target="audio", k=1)[0].id == "dict"
    assert col.search(audio=(tone(880.0), SR), target="audio", k=1)[0].id == "bytes"
    assert col.search(audio=path, target="audio", k=1)[0].id == "path"


def test_images_as_pil_array_bytes_and_path_find_themselves(
    col: CollectionAPI, setup: dict[str, Any]
) -> None:
    path = setup["media"] / "p4.png"
    path.write_bytes(png(4))
    col.ingest(
        [
            {"id": "pil", "image": Image.fromarray(picture(1))},
            {"id": "array", "image": picture(2)},
            {"id": "bytes", "image": png(3)},
            {"id": "path", "image": path},
        ]
    )
    for rid, query in [
        ("pil", picture(1)),
        ("array", Image.fromarray(picture(2))),
        ("bytes", png(3)),
        ("path", str(path)),
    ]:
        hit = col.search(image=query, target="image", k=1)[0]
        assert hit.id == rid and hit.score == pytest.approx(1.0, abs=1e-5)


def test_a_path_outside_the_roots_is_the_plugins_own_error(
    col: CollectionAPI, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(wav(tone(300.0)))
    with pytest.raises(mmstore.RecordError, match="roots") as err:
        col.ingest([{"id": "out", "audio": str(outside)}])
    assert err.value.record_id == "out"


# -- search ---------------------------------------------------------------------------------
def test_search_by_text_vector_and_record(filled: CollectionAPI) -> None:
    assert filled.search(text="item 4 red shoe", target="text", k=1)[0].id == "r4"
    hits = filled.search(vector=center(0), target="emb", k=3, where={"meta.color": "red"})
    assert len(hits) == 3 and all(h.meta["color"] == "red" for h in hits)
    assert filled.search(record="r2", target="emb", k=1)[0].label == "k0"
    many = filled.search_many(np.stack([center(0), center(1)]), target="emb", k=2)
    assert [h.label for h in many[0]] == ["k0", "k0"] and many[1][0].label == "k1"
    sounds = filled.search_many(audio=[(tone(220.0), SR), wav(tone(440.0))], target="audio", k=1)
    assert [hits[0].id for hits in sounds] == ["r0", "r9"]


def test_search_errors_are_the_same_classes(filled: CollectionAPI) -> None:
    with pytest.raises(mmstore.SpaceMismatchError):
        filled.search(text="red", target="emb")
    with pytest.raises(mmstore.NotFoundError):
        filled.search(record="ghost")
    with pytest.raises(mmstore.UnknownNameError):
        filled.search(text="red", target="nope")
    with pytest.raises(mmstore.InvalidInputError, match="txt"):
        filled.search(text="red", target="text", fusion="weighted", weights={"txt": 1.0})


# -- read and delete ------------------------------------------------------------------------
def test_get_and_delete(filled: CollectionAPI) -> None:
    row = filled.get("r5")[0]
    assert row["id"] == "r5" and row["label"] == "k1" and row["meta"]["n"] == 5
    assert row["ts"].isoformat().startswith("2024-01-06T00:00:00")
    with pytest.raises(mmstore.NotFoundError, match="ghost"):
        filled.get(["r1", "ghost"])
    assert filled.delete(["r1", "ghost"]) == 1 and len(filled) == 11


# -- heads ----------------------------------------------------------------------------------
def test_train_head_returns_its_report_and_predicts(filled: CollectionAPI) -> None:
    more = [{"id": f"v{i}", "label": f"k{i % 2}", "emb": center(i % 2)} for i in range(40)]
    filled.ingest(more)
    report = filled.train_head("clf", inputs=["emb"], epochs=60, patience=20, seed=0)
    assert isinstance(report, mmstore.HeadReport)
    assert report.kind == "classifier" and report.classes == ["k0", "k1"]
    assert report.history and "accuracy" in report.metrics
    assert [h["name"] for h in filled.heads()] == ["clf"]
    got = filled.predict("clf", ["v0", {"id": "new", "emb": center(1)}])
    assert [p["label"] for p in got] == ["k0", "k1"]
    skipped = filled.predict("clf", ["v1", "ghost"], on_error="skip")
    assert skipped[0]["label"] == "k1" and skipped[1]["label"] is None
    assert skipped[1]["id"] == "ghost" and "no record" in skipped[1]["error"]


def test_a_failed_training_raises_the_embedded_class(filled: CollectionAPI) -> None:
    with pytest.raises(mmstore.UnknownNameError, match="nope"):
        filled.train_head("bad", inputs=["nope"])
    with pytest.raises(mmstore.UnknownNameError, match="head kind"):
        filled.train_head("bad", kind="ranker", inputs=["emb"])
    with pytest.raises(mmstore.UnknownNameError, match="nohead"):
        filled.predict("nohead", ["r0"])


# -- both transports at once ----------------------------------------------------------------
def test_both_transports_store_and_find_the_same(setup: dict[str, Any]) -> None:
    """The same records through each: the same stored rows, the same hits and scores (the
    same vectors: arrays and audio reach the store as the same objects)."""
    local, remote = make(setup, "embedded"), make(setup, "served")
    for c in (local, remote):
        c.ingest(records())
    ids = [r["id"] for r in records()]
    assert local.get(ids) == remote.get(ids)
    queries: list[dict[str, Any]] = [
        {"vector": center(0), "target": "emb"},
        {"text": "item 3 blue hat", "target": "text"},
        {"audio": (tone(440.0), SR), "target": "audio"},
        {"image": picture(3), "target": "image"},
        {"record": "r6", "target": "image"},
    ]
    for query in queries:
        want, got = local.search(k=4, **query), remote.search(k=4, **query)
        assert got.ids == want.ids, query
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
        assert [(h.label, h.ts, h.meta) for h in got] == [(h.label, h.ts, h.meta) for h in want]
