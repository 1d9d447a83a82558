"""R9: malformed input, through the Python API, the CLI and HTTP, is refused with a typed
error naming the record and the field, and nothing of the refused call is written; and 0
non-finite values reach any index.

One collection shape on every surface: ``text`` (a tiny OpenCLIP's text tower), ``emb``
(8-d precomputed vectors), ``image`` (the tiny CLIP; paths only under one root) and
``audio`` (``logmel``; the same root, ``max_seconds`` 2). Every malformed record travels in
a batch with good records on both sides of it (an image and a clip before it, two records
of text, vector, label and metadata after it, all new), and each surface is driven twice:

- raise (API ``on_error="raise"``, CLI without ``--skip-bad``, HTTP by default): a subclass
  of ``mmstore.MMStoreError`` with a 4xx status naming the record (by id; by position "#n"
  when the id itself is bad) and the field; HTTP a 4xx with the JSON error body naming
  them; the CLI exit code 1 and one line naming them (by file and line when the id is
  bad). And 0 partial writes: the records, the catalog's vectors, every index (ids,
  tombstones and vectors in memory, its manifest row, its file on disk) and the media
  folder's files are exactly as before the call; ``col.verify()`` passes after each
  kind's refused calls;
- skip: exactly the bad records are listed (by id and field) and exactly the good ones
  written, per kind and with every kind's records in one call (``col.verify()`` after
  each).

After each surface every vector each index holds is finite and of unit length (cosine),
as are the catalog's.

Surfaces: the API runs every example, a fifth with ``chunk_size=2`` so that the good image
and clip of the first chunk (and their media files) are handled before the bad record fails
the call. The CLI takes a JSONL file (image and audio as paths of files under the root; 4
examples of each kind refused one by one, all of them in one ``--skip-bad`` run) and a
folder of media files (the same, for the media kinds). HTTP takes ``POST
/collections/m/records`` (bytes as ``{"$base64"}``, NaN and Infinity as Python's JSON writes
them, surrogates as ``\\u`` escapes) and ``POST /collections/m/records/media`` (multipart).
A surface leaves out what it cannot carry (Python objects over JSON, raw JSON text through
the API, non-media values in a folder); records that fail the request as a whole (a JSON
body no parser reads, a record that is not an object) are refused whole under skip too.

The bad inputs, by kind:

1. wrong vector dimension: 14 random dimensions of 1 to 64 (not 8), 4096, and 2-d arrays
   (1x8, 8x1, 2x4, 2x8);
2. NaN or infinity in a vector: one to eight NaN, +Inf or -Inf at random positions, a
   float16 array that overflowed, ``None`` elements, a zero vector (NaN once normalized);
3. empty vector: ``[]``, ``()``, ``[[]]``, 0-length, (0, 8) and (8, 0) arrays;
4. oversize text: 100,001 to 400,000 characters (ASCII, accented, emoji), and 100,001
   UTF-8 bytes (the service answers 413 from its limit, the API 422);
5. invalid UTF-8: bytes where text is expected (a lone continuation byte, an overlong
   form, an encoded surrogate, a code point past U+10FFFF, a cut multi-byte sequence,
   0xFF, random invalid bytes), JSONL lines and HTTP bodies with raw invalid UTF-8 inside a
   string, and lone surrogates (``\\ud800``, valid JSON escapes) in a text, an id, a
   label, a metadata value, a metadata key and a record's key;
6. corrupt image: PNGs cut inside their pixel data, a PNG with garbled pixel data (CRCs
   valid), one with a broken CRC, JPEGs cut in their scan, random bytes, random bytes after
   a PNG signature, a JPEG header before garbage, empty bytes;
7. decompression bomb: PNG and BMP headers declaring 90 M to 4 G pixels and no data;
8. unsupported image format: EPS, PCX, ICO, TGA, PPM, SGI, XBM, DDS, QOI, SPIDER, PDF,
   MSP, PALM, ICNS, JPEG 2000 and a hand-made PSD (files Pillow itself would open);
9. truncated audio: WAV and FLAC files cut at random points, a WAV header alone;
10. oversized audio: WAV and FLAC clips of 2.1 to 6 s at 8 to 22.05 kHz, ``max_seconds`` 2;
11. too-deep or too-large metadata: dict/list chains 17 to 600 levels deep, JSON nested
    5,000 and 50,000 levels (more than Python's parser takes), 64 KiB + 1 to 1 MiB of
    metadata, 9,000 keys, metadata that is a list, a string or a number, NaN and infinity
    inside it;
12. wrong field types: a dict, list, number or bool where text is expected; a dict, string,
    number, bool, list of strings, list of bools or ragged list where a vector is; a
    number, dict, list or bool where an image or a clip is; an id that is a dict, list,
    float, bool, null or empty, or missing; a label or timestamp of the wrong type; a record
    that is a list, string, number or null; an unknown field;
13. duplicate ids in one batch: a good record's id again (as a string, as an int, three
    times over);
14. paths outside the configured roots, for images and audio: an absolute path outside (as
    ``str`` and ``Path``), ``..`` out of the root, a sibling folder whose name starts with
    the root's, a symlink in the root to a file outside, ``/etc/passwd``, ``~``;
15. numbers out of range: vector values that overflow float32 (1e39) or whose norm does
    (3e38, 3e19), a 400-digit integer in a vector, timestamps past year 9999 or before
    year 1 (also a 400-digit one), ids of 600 and 5,000 digits, a label of 5,000 digits.

Hypothesis adds up to 25 random records of each of eleven shapes through the API (between
good vector records, refused, then skipped alone): vectors of a random wrong dimension (1
to 300), NaN or infinities at random positions, dict/list chains 17 to 401 deep, 64 to
293 KiB of metadata, non-text values for text, non-vectors (text, bools, mappings, lists
of text or bools), invalid ids (floats, bools, null, "", lists, mappings, lone
surrogates), ids of 513 to 700 characters, a good record's id again, bytes with a sequence
that is never UTF-8 at a random place, and timestamps out of range or not finite.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmstore_openclip.testing import random_encoder
from PIL import Image

import mmstore
from mmstore.cli.main import cli
from mmstore.service import Settings
from mmstore.service.app import create_app
from mmstore.testing import stored_vectors
from tests.reliability.figures import record
from tests.servers import running

#: numpy warns when a malformed vector overflows float32; the value is refused after
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

DIM = 8
SR = 16_000
MAX_SECONDS = 2.0
TINY = "mms-tiny-r9"
FRESH, DUP, DUP_INT, MISSING = "<fresh>", "<dup>", "<dup-int>", "<missing>"
MEDIA = ("image", "audio")


# -- the environment ------------------------------------------------------------------------
@dataclass
class Env:
    folder: Path
    clip: dict[str, Any]
    root: Path  # the collection's only root for image and audio paths
    outside: Path  # beside the root, outside it


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    folder = tmp_path_factory.mktemp("r9")
    root, outside, sibling = folder / "root", folder / "outside", folder / "root-sibling"
    for f in (root, outside, sibling):
        f.mkdir()
    rng = np.random.default_rng(0)
    for where in (outside, sibling):
        (where / "x.png").write_bytes(png(rng))
        (where / "x.wav").write_bytes(wav(rng))
    (root / "link.png").symlink_to(outside / "x.png")
    (root / "link.wav").symlink_to(outside / "x.wav")
    return Env(folder, random_encoder(folder / "tiny", TINY), root, outside)


def make_collection(store: mmstore.Store, env: Env) -> mmstore.Collection:
    roots = [str(env.root)]
    return store.create_collection(
        "m",
        encoders={
            "text": {**env.clip, "modality": "text"},
            "emb": {"encoder": "precomputed", "modality": "vector", "dim": DIM},
            "image": {**env.clip, "modality": "image"},
            "audio": {"encoder": "logmel"},
        },
        options={"image": {"roots": roots}, "audio": {"roots": roots, "max_seconds": MAX_SECONDS}},
    )


# -- values -----------------------------------------------------------------------------------
def png(rng: np.random.Generator, size: tuple[int, int] = (16, 16), fmt: str = "PNG") -> bytes:
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if fmt in ("XBM", "MSP", "PALM"):
        image = image.convert("1")
    elif fmt == "SPIDER":
        image = image.convert("L")
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def wav(rng: np.random.Generator, seconds: float = 0.5, rate: int = SR, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.01 * rng.normal(size=len(t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def unit(rng: np.random.Generator, dim: int = DIM) -> list[float]:
    v = rng.normal(size=dim)
    return (v / np.linalg.norm(v)).round(6).tolist()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def bmp_header(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + dib


def psd(width: int, height: int) -> bytes:
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return head + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(3 * width * height)


def idat_span(data: bytes) -> tuple[int, int]:
    start = data.index(b"IDAT") + 4
    return start, start + struct.unpack(">I", data[start - 8 : start - 4])[0]


def garbled_png(rng: np.random.Generator, fix_crc: bool) -> bytes:
    data = bytearray(png(rng, (32, 32)))
    start, end = idat_span(bytes(data))
    data[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    if fix_crc:
        data[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(data[start - 4 : end])))
    return bytes(data)


def nested(shape: list[str]) -> Any:
    """A chain of containers, the first outermost: "d" a dict, "l" a list."""
    value: Any = {}
    for kind in reversed(shape):
        value = {"k": value} if kind == "d" else [value]
    return value


def deep_json(depth: int) -> bytes:
    return b'{"k":' * depth + b"0" + b"}" * depth


# -- malformed records ----------------------------------------------------------------------
@dataclass(frozen=True)
class Raw:
    """A record as JSON bytes no parser accepts; ``%ID%`` stands for its id."""

    data: bytes
    rid: str = ""


@dataclass(frozen=True)
class Bad:
    """One malformed record: its kind, a few words, the field its error must name, and its
    keys besides the id (anything else than a dict: the record is that value)."""

    kind: str
    what: str
    field: str | None
    values: Any
    rid: Any = FRESH  # FRESH: a new id; DUP, DUP_INT: a good record's id again; else this id
    named: str | None = None  # how an invalid id is named (default: by position, "#n")

    def build(self, new_id: str, dup: str, position: int) -> tuple[Any, str]:
        """The record, and the name its error must give."""
        if isinstance(self.values, Raw):  # refused as a line or a request, not as a record
            data = self.values.data.replace(b"%ID%", new_id.encode())
            return Raw(data, new_id), f"line {position + 1}"
        if not isinstance(self.values, dict):
            return self.values, f"#{position}"
        known = {FRESH: new_id, DUP: dup, DUP_INT: int(dup)}
        if isinstance(self.rid, str) and self.rid in known:
            rid = known[self.rid]
            return {"id": rid, **self.values}, str(rid)
        record = dict(self.values) if self.rid == MISSING else {"id": self.rid, **self.values}
        return record, self.named or f"#{position}"


def b(kind: str, what: str, fld: str | None, values: Any, **kw: Any) -> Bad:
    return Bad(kind, what, fld, values, **kw)


def wrong_dims(rng: np.random.Generator) -> list[Bad]:
    dims = [*rng.choice([d for d in range(1, 65) if d != DIM], 14, replace=False), 4096]
    out = [b("wrong_dim", f"{d}-d", "emb", {"emb": unit(rng, int(d)), "text": "t"}) for d in dims]
    shapes = [(1, 8), (8, 1), (2, 4), (2, 8)]
    out += [
        b("wrong_dim", f"{s} array", "emb", {"emb": rng.normal(size=s).tolist()}) for s in shapes
    ]
    return out


def non_finite(rng: np.random.Generator) -> list[Bad]:
    out = []
    for _ in range(16):
        v = np.array(unit(rng))
        n = int(rng.integers(1, DIM + 1))
        v[rng.choice(DIM, n, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], n)
        out.append(b("non_finite", f"{n} non-finite", "emb", {"emb": v.tolist(), "text": "t"}))
    out.append(
        b("non_finite", "float16 overflow", "emb", {"emb": np.full(DIM, 7e4).astype(np.float16)})
    )
    out.append(b("non_finite", "None elements", "emb", {"emb": [None] * DIM}))
    out.append(b("non_finite", "zero vector", "emb", {"emb": [0.0] * DIM, "text": "t"}))
    return out


def empty_vectors(rng: np.random.Generator) -> list[Bad]:
    values: list[Any] = [[], (), [[]], np.zeros(0), np.zeros((0, DIM)), np.zeros((DIM, 0))]
    return [b("empty_vector", repr(v)[:30], "emb", {"emb": v}) for v in values]


def oversize_texts(rng: np.random.Generator) -> list[Bad]:
    out = []
    for alphabet in ("abc ", "éèà ", "🙂🚀 ", "x"):
        n = int(rng.integers(100_001, 400_000))
        text = "".join(rng.choice(list(alphabet), n))
        out.append(b("oversize_text", f"{n:,} chars of {alphabet!r}", "text", {"text": text}))
    out.append(b("oversize_text", "100,001 bytes", "text", {"text": b"y" * 100_001}))
    return out


INVALID_UTF8 = [b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xff"]


def invalid_utf8(rng: np.random.Generator) -> list[Bad]:
    seqs = list(INVALID_UTF8)
    while len(seqs) < 14:
        data = rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8).tobytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            seqs.append(data)
    out = [b("invalid_utf8", f"bytes {s!r}", "text", {"text": b"ok " + s + b" ok"}) for s in seqs]
    for s in seqs[:6]:
        line = b'{"id": "%ID%", "text": "ok ' + s + b' ok"}'
        out.append(b("invalid_utf8", f"raw {s!r} in JSON", None, Raw(line)))
    lone = "\ud800"
    out += [
        b("invalid_utf8", "surrogate text", "text", {"text": f"a{lone}b"}),
        b("invalid_utf8", "surrogate id", "id", {"text": "t"}, rid=f"id{lone}"),
        b("invalid_utf8", "surrogate label", "label", {"text": "t", "label": lone}),
        b("invalid_utf8", "surrogate meta value", "meta", {"text": "t", "meta": {"k": lone}}),
        b("invalid_utf8", "surrogate meta key", "meta", {"text": "t", "meta": {lone: 1}}),
        b("invalid_utf8", "surrogate record key", "\\ud800", {"text": "t", lone: 1}),
    ]
    return out


def corrupt_images(rng: np.random.Generator) -> list[Bad]:
    out = []
    for _ in range(5):
        data = png(rng, (48, 48))
        start, end = idat_span(data)
        cut = int(rng.integers(start, end))
        out.append(b("corrupt_image", f"PNG cut at {cut}", "image", {"image": data[:cut]}))
    for _ in range(4):
        data = png(rng, (64, 64), "JPEG")
        cut = int(rng.integers(200, len(data) // 2))
        out.append(b("corrupt_image", f"JPEG cut at {cut}", "image", {"image": data[:cut]}))
    noise = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    out += [
        b("corrupt_image", "garbled PNG data", "image", {"image": garbled_png(rng, True)}),
        b("corrupt_image", "broken PNG CRC", "image", {"image": garbled_png(rng, False)}),
        b("corrupt_image", "random bytes", "image", {"image": noise}),
        b(
            "corrupt_image",
            "PNG signature, noise",
            "image",
            {"image": b"\x89PNG\r\n\x1a\n" + noise},
        ),
        b("corrupt_image", "JPEG header, noise", "image", {"image": b"\xff\xd8\xff\xe0" + noise}),
        b("corrupt_image", "empty bytes", "image", {"image": b""}),
    ]
    return out


def bombs(rng: np.random.Generator) -> list[Bad]:
    out = []
    for low, high in ((9_500, 13_000), (14_000, 30_000), (30_000, 65_000)):
        for header in (png_header, bmp_header):
            w, h = (int(x) for x in rng.integers(low, high, 2))
            name = f"{header.__name__} {w}x{h}"
            out.append(b("decompression_bomb", name, "image", {"image": header(w, h)}))
    return out


UNSUPPORTED = ["EPS", "PCX", "ICO", "TGA", "PPM", "SGI", "XBM", "DDS", "QOI", "SPIDER"]
UNSUPPORTED += ["PDF", "MSP", "PALM", "ICNS", "JPEG2000"]


def unsupported_images(rng: np.random.Generator) -> list[Bad]:
    out = [b("unsupported_image", f, "image", {"image": png(rng, fmt=f)}) for f in UNSUPPORTED]
    return [*out, b("unsupported_image", "PSD", "image", {"image": psd(8, 8)})]


def truncated_audio(rng: np.random.Generator) -> list[Bad]:
    out = []
    for fmt in ("WAV", "FLAC"):
        for _ in range(5):
            data = wav(rng, 1.0, fmt=fmt)
            cut = int(rng.integers(len(data) // 4, len(data) - 200))
            out.append(b("truncated_audio", f"{fmt} cut at {cut}", "audio", {"audio": data[:cut]}))
    header = wav(rng, 1.0)[:44]
    return [*out, b("truncated_audio", "WAV header alone", "audio", {"audio": header})]


def oversized_audio(rng: np.random.Generator) -> list[Bad]:
    out = []
    for fmt, rate in (("WAV", 8_000), ("WAV", SR), ("FLAC", 8_000), ("FLAC", 22_050)):
        for _ in range(2):
            seconds = round(float(rng.uniform(MAX_SECONDS + 0.1, 6.0)), 2)
            data = wav(rng, seconds, rate, fmt)
            out.append(b("oversized_audio", f"{fmt} {seconds} s", "audio", {"audio": data}))
    return out


def bad_metadata(rng: np.random.Generator) -> list[Bad]:
    out = []
    for depth in (17, 18, 25, 60, 200, 600):
        shape = ["d", *rng.choice(["d", "l"], depth - 1)]
        meta = nested([str(s) for s in shape])
        out.append(b("bad_metadata", f"{depth} deep", "meta", {"text": "t", "meta": meta}))
    for depth in (5_000, 50_000):
        line = b'{"id": "%ID%", "text": "t", "meta": ' + deep_json(depth) + b"}"
        out.append(b("bad_metadata", f"JSON {depth} deep", None, Raw(line)))
    for size in (65 * 1024 + 1, int(rng.integers(70_000, 1 << 20))):
        meta = {"blob": "m" * size}
        out.append(b("bad_metadata", f"{size:,} bytes", "meta", {"text": "t", "meta": meta}))
    many = {f"k{i}": i for i in range(9000)}
    out.append(b("bad_metadata", "9,000 keys", "meta", {"text": "t", "meta": many}))
    for meta in ([1, 2], "{}", 7, {"x": math.nan}, {"x": [math.inf]}):
        out.append(b("bad_metadata", f"meta {meta!r}", "meta", {"text": "t", "meta": meta}))
    return out


def wrong_types(rng: np.random.Generator) -> list[Bad]:
    kind, cases = "wrong_type", []
    for fld, values in (
        ("text", [{"a": 1}, [1, 2], 42, 3.5, True]),
        ("emb", [{"x": 1}, "abc", 5, True, ["1"] * DIM, [True] * DIM, [[1.0] * DIM, [2.0]]]),
        ("image", [5, {"path": "x.png"}, [1, 2], 2.5, True]),
        ("audio", [5, {"samples": [0.1]}, [0.1, 0.2], True]),
        ("label", [[1], {"a": 1}, 1.5, True]),
        ("ts", [[2026], {"y": 1}, "yesterday", True]),
    ):
        extra = {} if fld == "text" else {"text": "t"}
        cases += [b(kind, f"{fld}={v!r:.20}", fld, {**extra, fld: v}) for v in values]
    for rid in ({"a": 1}, [1], 1.5, True, None, ""):
        cases.append(b(kind, f"id={rid!r}", "id", {"text": "t"}, rid=rid))
    cases.append(b(kind, "no id", "id", {"text": "t"}, rid=MISSING))
    cases += [b(kind, f"record {r!r}", None, r) for r in ([1, 2], "rec", 5, None)]
    cases.append(b(kind, "unknown field", "txt", {"txt": "typo"}))
    return cases


def duplicates(rng: np.random.Generator) -> list[Bad]:
    kind = "duplicate_id"
    return [
        b(kind, "same id", "id", {"text": "again"}, rid=DUP),
        b(kind, "same id as int", "id", {"emb": unit(rng)}, rid=DUP_INT),
        b(kind, "same id, other fields", "id", {"text": "t", "emb": unit(rng)}, rid=DUP),
        b(kind, "same id a third time", "id", {"text": "x"}, rid=DUP),
    ]


def outside_roots(env: Env) -> list[Bad]:
    out = []
    for fld, suffix in (("image", "png"), ("audio", "wav")):
        paths: list[Any] = [
            str(env.outside / f"x.{suffix}"),
            f"{env.root}/../outside/x.{suffix}",
            str(env.root.parent / "root-sibling" / f"x.{suffix}"),
            str(env.root / f"link.{suffix}"),
            "/etc/passwd",
            f"~/x.{suffix}",
            env.outside / f"x.{suffix}",
        ]
        out += [b("outside_roots", f"{fld} {p}", fld, {fld: p}) for p in paths]
    return out


def out_of_range(rng: np.random.Generator) -> list[Bad]:
    kind, big = "out_of_range", 10**400
    cases = [
        b(kind, "float32 overflow", "emb", {"emb": [1e39] * DIM}),
        b(kind, "norm overflow 3e38", "emb", {"emb": [3e38] * DIM}),
        b(kind, "norm overflow 3e19", "emb", {"emb": [3e19] + [1.0] * (DIM - 1)}),
        b(kind, "400-digit int", "emb", {"emb": [big] + [1] * (DIM - 1)}),
    ]
    for ts in (10**20, 1e300, -1e15, 253_402_300_800, big):
        cases.append(b(kind, f"ts {str(ts)[:12]}", "ts", {"text": "t", "ts": ts}))
    cases.append(
        b(kind, "600-digit id", "id", {"text": "t"}, rid=10**600, named=str(10**600)[:40] + "...")
    )
    cases.append(b(kind, "5,000-digit id", "id", {"text": "t"}, rid=10**5000))
    cases.append(b(kind, "5,000-digit label", "label", {"text": "t", "label": 10**5000}))
    return cases


def examples(env: Env) -> dict[str, list[Bad]]:
    """Every malformed record, by kind (the same ones on every surface, seeded)."""
    rng = np.random.default_rng(9)
    makers: list[Callable[[np.random.Generator], list[Bad]]] = [
        wrong_dims,
        non_finite,
        empty_vectors,
        oversize_texts,
        invalid_utf8,
        corrupt_images,
        bombs,
        unsupported_images,
        truncated_audio,
        oversized_audio,
        bad_metadata,
        wrong_types,
        duplicates,
        lambda _: outside_roots(env),
        out_of_range,
    ]
    out: dict[str, list[Bad]] = {}
    for make in makers:
        for bad in make(rng):
            out.setdefault(bad.kind, []).append(bad)
    return out


# -- batches --------------------------------------------------------------------------------
class Ids:
    """New record ids (digits, so that an int can repeat one)."""

    def __init__(self, start: int) -> None:
        self.n = start

    def __call__(self) -> str:
        self.n += 1
        return str(self.n)


@dataclass
class Batch:
    records: list[Any]
    good: list[str]
    bad: list[tuple[str, str | None]]  # (name, field) each bad record's error must give
    bad_at: list[int]  # where the bad records are in ``records``


def goods(ids: Ids, rng: np.random.Generator) -> list[dict[str, Any]]:
    """An image and a clip (first: with ``chunk_size=2`` their blobs are written before a
    later chunk fails the call), then two records of text, vector, label and metadata."""
    media = [{"id": ids(), "image": png(rng)}, {"id": ids(), "audio": wav(rng)}]
    return media + [
        {"id": ids(), "text": f"good record {i}", "emb": unit(rng), "label": "ok", "meta": {"i": i}}
        for i in range(2)
    ]


def assemble(bads: list[Bad], ids: Ids, rng: np.random.Generator) -> Batch:
    """Good records, the bad ones, then more good ones."""
    good = goods(ids, rng)
    records: list[Any] = good[:2]
    expected, at = [], []
    for bad in bads:
        rec, name = bad.build(ids(), good[0]["id"], len(records))
        at.append(len(records))
        records.append(rec)
        expected.append((name, bad.field))
    return Batch([*records, *good[2:]], [g["id"] for g in good], expected, at)


# -- what a store holds ---------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    records: tuple[tuple[Any, ...], ...]
    vectors: tuple[tuple[Any, ...], ...]
    indexes: tuple[tuple[Any, ...], ...]  # in memory: vids, tombstones, vectors
    manifests: tuple[tuple[Any, ...], ...]  # the catalog's row of each index
    index_files: tuple[tuple[str, str], ...]  # on disk: name, sha256
    media: tuple[str, ...]

    @property
    def ids(self) -> set[str]:
        return {r[0] for r in self.records}


def rows(col: mmstore.Collection, sql: str) -> tuple[tuple[Any, ...], ...]:
    table = col.store.catalog.query_arrow(sql, [col.name])
    return tuple(tuple(r.values()) for r in table.to_pylist())


def snapshot(col: mmstore.Collection) -> Snapshot:
    records = rows(
        col,
        "SELECT id, rev, content_hash, label, ts, meta, sources FROM mms_records "
        "WHERE collection = ? ORDER BY id",
    )
    vectors = tuple(
        (r["vid"], r["record_id"], r["field"], r["encoder_key"], r["vector"].tobytes())
        for r in stored_vectors(col)
    )
    indexes = []
    for f in col.active.values():
        index = col.indexes.get(f)
        held = index.all_vectors()
        indexes.append((f.name, index.vids.tobytes(), index.dead.tobytes(), held.tobytes()))
    manifests = rows(
        col,
        "SELECT field, encoder_key, kind, file, checksum, count, last_vid FROM mms_indexes "
        "WHERE collection = ? ORDER BY field",
    )
    return Snapshot(records, vectors, tuple(indexes), manifests, files(col), media_files(col.store))


def files(col: mmstore.Collection) -> tuple[tuple[str, str], ...]:
    folder = col.indexes.folder
    found = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return tuple((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in found)


def media_files(store: mmstore.Store) -> tuple[str, ...]:
    folder = store.media.folder
    return tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))


def verified(col: mmstore.Collection) -> bool:
    """Whether every index holds exactly the catalog's vectors and its file is sound."""
    return all(v["ok"] for v in col.verify())


def finite_vectors(col: mmstore.Collection) -> int:
    """Assert every vector each index holds (and the catalog) is finite and of unit length;
    return how many were checked."""
    checked = 0
    for f in col.active.values():
        index = col.indexes.get(f)
        held = index.all_vectors()
        assert np.isfinite(held).all(), f"non-finite values in the index of {f.name!r}"
        live = held[~index.dead]
        assert np.allclose(np.linalg.norm(live, axis=1), 1.0, atol=1e-3), f.name
        _, stored = col.indexes.read_vectors(f)
        assert np.isfinite(stored).all() and len(stored) == len(live), f.name
        checked += len(held)
    return checked


# -- the surfaces ---------------------------------------------------------------------------
@dataclass
class Refusal:
    """A refused call: whom its error names, and what it says."""

    name: str | None
    field: str | None
    message: str


@dataclass
class Skipped:
    written: int
    rejected: list[tuple[str, str | None]]


@dataclass
class Tally:
    refused: Counter[str] = field(default_factory=Counter)  # raise-mode examples, by kind
    skipped: int = 0  # distinct bad records run through skip calls
    skip_calls: int = 0

    def figure(self, surface: str) -> str:
        calls = f"{self.skip_calls} call" + ("s" if self.skip_calls != 1 else "")
        return (
            f"{surface}: {len(self.refused)} kinds, {sum(self.refused.values()):,} malformed "
            "records each refused whole with a typed error naming the record and field and 0 "
            "partial writes (records, vectors, indexes in memory and on disk, media files); "
            f"with skip ({calls}) exactly the {self.skipped:,} bad records left out and "
            "listed, the good ones written"
        )


def figure(tallies: dict[str, Tally], vectors: int) -> str:
    parts = [tally.figure(surface) for surface, tally in tallies.items()]
    return "; ".join(parts) + f"; 0 non-finite values among the {vectors:,} indexed vectors"


class Surface:
    """One way in: whether it can carry a bad record at all, a batch run expecting a typed
    refusal, and one leaving the bad records out."""

    name = ""
    #: raise-mode runs per kind (None: every example the surface carries)
    raise_sample: int | None = None
    #: skip calls: one per kind, and one with every kind's bad records together
    skip_each_kind, skip_all_kinds = True, True

    def carries(self, bad: Bad) -> bool:
        raise NotImplementedError

    def skippable(self, bad: Bad) -> bool:
        """Whether skip leaves the record out (not: the whole request is refused)."""
        return True

    def batch(self, bads: list[Bad], ids: Ids, rng: np.random.Generator) -> Batch:
        return assemble(bads, ids, rng)

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def verified(self) -> bool:
        raise NotImplementedError

    def refuse(self, batch: Batch, turn: int) -> Refusal:
        raise NotImplementedError

    def skip(self, batch: Batch) -> Skipped:
        raise NotImplementedError

    def named(self, refusal: Refusal, batch: Batch) -> bool:
        return (refusal.name, refusal.field) == batch.bad[0]


def prove(surface: Surface, cases: dict[str, list[Bad]], ids: Ids, seed: int) -> Tally:
    """Each bad record in a batch of good ones, refused whole; then the bad records of each
    kind, and of every kind, among good ones with skip."""
    rng, tally = np.random.default_rng(seed), Tally()
    together: list[Bad] = []
    for kind, bads in cases.items():
        carried = [bad for bad in bads if surface.carries(bad)]
        for turn, bad in enumerate(carried[: surface.raise_sample]):
            refuse_one(surface, surface.batch([bad], ids, rng), f"{kind} {bad.what}", turn)
            tally.refused[kind] += 1
        assert surface.verified(), f"{surface.name} {kind}"
        skippable = [bad for bad in carried if surface.skippable(bad)]
        together += skippable
        if surface.skip_each_kind and skippable:
            skip_kind(surface, surface.batch(skippable, ids, rng), kind)
            tally.skip_calls += 1
    if surface.skip_all_kinds and together:
        skip_kind(surface, surface.batch(together, ids, rng), "every kind")
        tally.skip_calls += 1
    tally.skipped = len(together)
    return tally


def refuse_one(surface: Surface, batch: Batch, what: str, turn: int) -> None:
    before = surface.snapshot()
    refusal = surface.refuse(batch, turn)
    context = f"{surface.name} {what}: {refusal}"
    assert surface.named(refusal, batch), context
    assert surface.snapshot() == before, f"partial write: {context}"


def skip_kind(surface: Surface, batch: Batch, kind: str) -> None:
    before = surface.snapshot()
    skipped = surface.skip(batch)
    after = surface.snapshot()
    context = f"{surface.name} skip {kind}: {skipped}"
    assert sorted(skipped.rejected, key=repr) == sorted(batch.bad, key=repr), context
    assert skipped.written == len(batch.good), context
    assert before.ids <= after.ids and after.ids - before.ids == set(batch.good), context
    assert surface.verified(), context


# -- the Python API -------------------------------------------------------------------------
class Api(Surface):
    name = "API"

    def __init__(self, col: mmstore.Collection) -> None:
        self.col = col

    def carries(self, bad: Bad) -> bool:
        return not isinstance(bad.values, Raw)

    def snapshot(self) -> Snapshot:
        return snapshot(self.col)

    def verified(self) -> bool:
        return verified(self.col)

    def refuse(self, batch: Batch, turn: int) -> Refusal:
        size = 2 if turn % 5 == 1 else 4096  # a fifth fail in a later chunk than the first
        with pytest.raises(mmstore.MMStoreError) as err:
            self.col.ingest(batch.records, chunk_size=size)
        e = err.value
        assert 400 <= e.http_status < 500, repr(e)
        return Refusal(getattr(e, "record_id", None), getattr(e, "field", None), str(e))

    def skip(self, batch: Batch) -> Skipped:
        report = self.col.ingest(batch.records, on_error="skip")
        return Skipped(report.written, [(r.id, r.field) for r in report.rejected])


def test_api_refuses_every_malformed_record_whole(env: Env) -> None:
    with mmstore.open(env.folder / "api") as store:
        col = make_collection(store, env)
        tally = prove(Api(col), examples(env), Ids(100_000), seed=1)
        vectors = finite_vectors(col)
    assert len(tally.refused) == 15
    record("R9", "test_api_refuses_every_malformed_record_whole", figure({"API": tally}, vectors))


# -- JSON on the wire -----------------------------------------------------------------------
def to_json(value: Any, bytes_ok: bool = True) -> Any:
    """The JSON form of a Python value (bytes as ``{"$base64"}``, or a TypeError without
    ``bytes_ok``); TypeError when it has none."""
    if isinstance(value, bytes):
        if not bytes_ok:
            raise TypeError("bytes")
        return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, np.ndarray):
        return to_json(value.tolist(), bytes_ok)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("a key that is not a str")
        return {k: to_json(v, bytes_ok) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, bytes_ok) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(type(value).__name__)


def json_text(value: Any, bytes_ok: bool = True) -> bytes | None:
    """The record as JSON bytes (NaN and Infinity as Python writes them, surrogates as
    escapes), or None when it has no JSON form."""
    if isinstance(value, Raw):
        return value.data
    try:
        return json.dumps(to_json(value, bytes_ok)).encode()
    except (TypeError, ValueError, RecursionError):
        return None


# -- the CLI --------------------------------------------------------------------------------
def run_cli(store: Path, source: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["ingest", str(store), "m", str(source), "--no-progress", *args])


def cli_refusal(result: Any) -> Refusal:
    """Exit code 1 from the CLI's error handler (not a crash), and one line."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return Refusal(None, None, lines[0])


def parse_rejected(entry: str) -> tuple[str, str | None]:
    """A line of the report's ``rejected``: "ID (FIELD): why", or "FILE:LINE: why"."""
    line = re.match(r"^[^ ]*\.jsonl:(\d+): ", entry)
    if line:
        return f"line {line[1]}", None
    found = re.match(r"^(.*) \(([^()]*)\): ", entry)
    assert found, entry
    return by_position(found[1]), None if found[2] == "None" else found[2]


def by_position(name: str) -> str:
    """A record the CLI names by its line ("7.jsonl:3"), by its position as the API does."""
    line = re.fullmatch(r"\d+\.jsonl:(\d+)", name)
    return f"#{int(line[1]) - 1}" if line else name


class CliFile(Surface):
    """``mmstore ingest STORE m FILE.jsonl``; media values as paths of files under the root."""

    name = "CLI (JSONL)"
    raise_sample = 4
    skip_each_kind = False

    def __init__(self, env: Env, path: Path) -> None:
        self.env, self.path, self.n = env, path, 0
        self.source = path  # the file or folder the CLI ran on last
        self.last: Snapshot | None = None  # the store as last seen, until the CLI runs again
        self.work, self.media = env.folder / "cli-work", env.root / "cli"
        self.work.mkdir(exist_ok=True)
        self.media.mkdir(exist_ok=True)

    def carries(self, bad: Bad) -> bool:
        return self.line(bad.build("1", "1", 0)[0], dry=True) is not None

    def line(self, record: Any, dry: bool = False) -> bytes | None:
        if isinstance(record, dict):
            record = {k: self.media_path(k, v, dry) for k, v in record.items()}
        return json_text(record, bytes_ok=False)

    def media_path(self, key: str, value: Any, dry: bool) -> Any:
        if key not in MEDIA or not isinstance(value, bytes):
            return value
        self.n += 1
        path = self.media / f"{self.n}{'.png' if key == 'image' else '.wav'}"
        if not dry:
            path.write_bytes(value)
        return str(path)

    def write(self, batch: Batch) -> Path:
        lines = [self.line(r) for r in batch.records]
        assert all(line is not None for line in lines)
        self.n += 1
        self.source = self.work / f"{self.n}.jsonl"
        self.source.write_bytes(b"\n".join(line or b"" for line in lines) + b"\n")
        return self.source

    def snapshot(self) -> Snapshot:
        if self.last is None:
            with mmstore.open(self.path, read_only=True) as store:
                self.last = snapshot(store.collection("m"))
        return self.last

    def run(self, *args: Any) -> Any:
        self.last = None
        return run_cli(self.path, *args)

    def verified(self) -> bool:
        with mmstore.open(self.path, read_only=True) as store:
            return verified(store.collection("m"))

    def refuse(self, batch: Batch, turn: int) -> Refusal:
        return cli_refusal(self.run(self.write(batch)))

    def named(self, refusal: Refusal, batch: Batch) -> bool:
        name, fld = batch.bad[0]
        if name.startswith("line "):
            return f".jsonl:{name[5:]}: " in refusal.message
        if name.startswith("#"):  # the CLI names it by its line
            name = f"{self.source.name}:{int(name[1:]) + 1}"
        where = f"record {name!r}" + (f", field {fld!r}" if fld else "")
        return refusal.message.startswith(f"error: {where}: ")

    def skip(self, batch: Batch) -> Skipped:
        result = self.run(self.write(batch), "--skip-bad", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output.strip().splitlines()[-1])
        return Skipped(report["written"], [parse_rejected(x) for x in report["rejected"]])


class CliFolder(CliFile):
    """``mmstore ingest STORE m FOLDER``: one file per record, its id the file's name."""

    name = "CLI (folder)"

    def carries(self, bad: Bad) -> bool:
        values = bad.values
        return (
            isinstance(values, dict)
            and bad.rid == FRESH
            and list(values) in (["image"], ["audio"])
            and isinstance(next(iter(values.values())), bytes)
        )

    def batch(self, bads: list[Bad], ids: Ids, rng: np.random.Generator) -> Batch:
        whole = assemble(bads, ids, rng)
        keep = [r for r in whole.records if set(r) - {"id"} <= set(MEDIA)]
        good = [r["id"] for r in keep if r["id"] in whole.good]
        return Batch(keep, good, whole.bad, [])

    def write(self, batch: Batch) -> Path:
        self.n += 1
        self.source = self.work / f"folder-{self.n}"
        self.source.mkdir()
        for r in batch.records:
            key = "image" if "image" in r else "audio"
            (self.source / f"{r['id']}{'.png' if key == 'image' else '.wav'}").write_bytes(r[key])
        return self.source


def test_cli_refuses_every_malformed_record_whole(env: Env) -> None:
    path = env.folder / "cli"
    with mmstore.open(path) as store:
        make_collection(store, env)
    cases, ids = examples(env), Ids(300_000)
    tallies = {
        s.name: prove(s, cases, ids, seed=2) for s in (CliFile(env, path), CliFolder(env, path))
    }
    with mmstore.open(path, read_only=True) as store:
        vectors = finite_vectors(store.collection("m"))
    assert len(tallies[CliFile.name].refused) == 15
    record("R9", "test_cli_refuses_every_malformed_record_whole", figure(tallies, vectors))


# -- HTTP -----------------------------------------------------------------------------------
def http_refusal(response: httpx.Response) -> Refusal:
    """A 4xx with the JSON error body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert body["error"] and body["message"], body
    message = f"{response.status_code} {body['error']}: {body['message']}"
    return Refusal(body.get("record"), body.get("field"), message)


class HttpJson(Surface):
    """``POST /collections/m/records`` with a JSON body."""

    name = "HTTP (JSON)"

    def __init__(self, http: httpx.Client, app: Any, col: mmstore.Collection) -> None:
        self.http, self.lock, self.col = http, app.state.store_lock, col

    def carries(self, bad: Bad) -> bool:
        return json_text(bad.build("1", "1", 0)[0]) is not None

    def skippable(self, bad: Bad) -> bool:
        return isinstance(bad.values, dict)  # others fail the request's schema or parsing

    def post(self, batch: Batch, on_error: str) -> httpx.Response:
        lines = b", ".join(json_text(r) or b"" for r in batch.records)
        body = b'{"records": [' + lines + b'], "on_error": "' + on_error.encode() + b'"}'
        headers = {"content-type": "application/json"}
        return self.http.post("/collections/m/records", content=body, headers=headers)

    def snapshot(self) -> Snapshot:
        with self.lock:
            return snapshot(self.col)

    def verified(self) -> bool:
        with self.lock:
            return verified(self.col)

    def refuse(self, batch: Batch, turn: int) -> Refusal:
        whole = not isinstance(batch.records[batch.bad_at[0]], dict)
        return http_refusal(self.post(batch, "skip" if whole and turn % 2 else "raise"))

    def named(self, refusal: Refusal, batch: Batch) -> bool:
        record, name = batch.records[batch.bad_at[0]], batch.bad[0][0]
        if isinstance(record, Raw):  # the body is no JSON the service reads, or (Python's
            # parser lets UTF-8-encoded surrogates through) the record's text is refused
            unread = refusal.message.startswith(("400 ", "422 ")) and refusal.name is None
            return unread or refusal.name == record.rid
        if not isinstance(record, dict):  # the request's schema refuses it, by position
            return refusal.message.startswith("422 ") and f"records.{name[1:]}" in refusal.message
        return super().named(refusal, batch)

    def skip(self, batch: Batch) -> Skipped:
        response = self.post(batch, "skip")
        assert response.status_code == 200, response.text[:500]
        report = response.json()
        return Skipped(report["written"], [(r["id"], r["field"]) for r in report["rejected"]])


class HttpMedia(HttpJson):
    """``POST /collections/m/records/media``: each media value a part "<id>/<field>"."""

    name = "HTTP (multipart)"

    def carries(self, bad: Bad) -> bool:
        values = bad.values
        if not isinstance(values, dict) or bad.rid != FRESH:
            return False
        parts = {k for k, v in values.items() if k in MEDIA and isinstance(v, bytes)}
        rest = {k: v for k, v in values.items() if k not in parts}
        return bool(parts) and json_text(rest, bytes_ok=False) is not None

    def post(self, batch: Batch, on_error: str) -> httpx.Response:
        records, files = [], []
        for r in batch.records:
            parts = {k: v for k, v in r.items() if k in MEDIA and isinstance(v, bytes)}
            records.append(to_json({k: v for k, v in r.items() if k not in parts}))
            files += [
                (f"{r['id']}/{k}", (f"{k}.bin", v, "application/octet-stream"))
                for k, v in parts.items()
            ]
        data = {"records": json.dumps(records), "on_error": on_error}
        return self.http.post("/collections/m/records/media", data=data, files=files)


def test_http_refuses_every_malformed_record_whole(env: Env) -> None:
    with mmstore.open(env.folder / "http") as store:
        col = make_collection(store, env)
        app = create_app(store, Settings(auth=False))
        with running(app) as url, httpx.Client(base_url=url, timeout=120) as http:
            cases, ids = examples(env), Ids(500_000)
            surfaces = (HttpJson(http, app, col), HttpMedia(http, app, col))
            tallies = {s.name: prove(s, cases, ids, seed=3) for s in surfaces}
        vectors = finite_vectors(col)
    assert len(tallies[HttpJson.name].refused) == 15
    record("R9", "test_http_refuses_every_malformed_record_whole", figure(tallies, vectors))


# -- random malformed records (Hypothesis) --------------------------------------------------
FINITE = st.floats(-1.0, 1.0, allow_nan=False, width=32)
NEVER_UTF8 = [b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]


def spoil(v: list[float], where: set[int], bad: float) -> Bad:
    spoiled = [bad if i in where else x for i, x in enumerate(v)]
    return Bad("non_finite", f"{bad} at {sorted(where)}", "emb", {"emb": spoiled})


def insert(data: bytes, at: int, seq: bytes) -> Bad:
    at = min(at, len(data))
    return Bad("invalid_utf8", repr(seq), "text", {"text": data[:at] + seq + data[at:]})


def value_bad(kind: str, fld: str, extra: dict[str, Any] | None = None) -> Callable[[Any], Bad]:
    """A maker of records whose ``fld`` is the drawn value (beside ``extra``)."""
    return lambda v: Bad(kind, repr(v)[:30], fld, {**(extra or {}), fld: v})


def id_bad(kind: str, named: Callable[[Any], str | None]) -> Callable[[Any], Bad]:
    return lambda r: Bad(kind, f"id {r!r:.20}", "id", {"emb": [1.0] * DIM}, r, named(r))


def malformed_records() -> dict[str, st.SearchStrategy[Bad]]:
    """Random records with one malformed value, by what is malformed (seven of the kinds)."""
    vec = st.lists(FINITE, min_size=DIM, max_size=DIM)
    dims = st.integers(1, 300).filter(lambda d: d != DIM)
    deep = st.lists(st.sampled_from("dl"), min_size=16, max_size=400).map(
        lambda s: nested(["d", *s])
    )
    small = st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=4), st.none())
    mapping = st.dictionaries(st.text(max_size=3), small, max_size=3)
    not_vector = st.one_of(
        st.text(min_size=1),
        st.booleans(),
        mapping,
        st.lists(st.text(min_size=1), min_size=DIM, max_size=DIM),
        st.lists(st.booleans(), min_size=DIM, max_size=DIM),
    )
    invalid_id = st.one_of(
        st.floats(),
        st.booleans(),
        st.none(),
        st.just(""),
        st.lists(st.integers(), max_size=2),
        mapping,
        st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
    )
    late = st.one_of(
        st.integers(min_value=253_402_300_800),
        st.integers(max_value=-62_135_596_801),
        st.sampled_from([math.nan, math.inf, -math.inf, 1e300]),
    )
    vector = {"emb": [1.0] * DIM}
    return {
        "wrong dimension": dims.flatmap(lambda d: st.lists(FINITE, min_size=d, max_size=d)).map(
            value_bad("wrong_dim", "emb")
        ),
        "non-finite": st.builds(
            spoil,
            vec,
            st.sets(st.integers(0, DIM - 1), min_size=1),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        ),
        "deep meta": deep.map(value_bad("bad_metadata", "meta", vector)),
        "large meta": st.integers(64 * 1024, 300_000).map(
            lambda n: value_bad("bad_metadata", "meta", vector)({"k": "m" * n})
        ),
        "not text": st.one_of(
            small.filter(lambda v: not isinstance(v, str | None)),
            st.lists(small, max_size=3),
            mapping,
        ).map(value_bad("wrong_type", "text")),
        "not a vector": not_vector.map(value_bad("wrong_type", "emb")),
        "invalid id": invalid_id.map(id_bad("wrong_type", lambda r: None)),
        "long id": st.text(min_size=513, max_size=700).map(
            id_bad("out_of_range", lambda r: r[:40] + "...")
        ),
        "duplicate id": st.builds(
            lambda r, v: Bad("duplicate_id", r, "id", {"emb": v}, r),
            st.sampled_from([DUP, DUP_INT]),
            vec,
        ),
        "invalid UTF-8": st.builds(
            insert, st.binary(max_size=30), st.integers(0, 30), st.sampled_from(NEVER_UTF8)
        ),
        "timestamp": late.map(value_bad("out_of_range", "ts", vector)),
    }


def vector_goods(ids: Ids, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [{"id": ids(), "emb": unit(rng), "label": "ok", "meta": {"n": i}} for i in range(3)]


def refused_then_skipped(col: mmstore.Collection, bad: Bad, ids: Ids, rng: Any) -> None:
    """The bad record between good ones: refused naming itself, nothing written; then with
    skip, only it left out."""
    good = vector_goods(ids, rng)
    rec, name = bad.build(ids(), good[0]["id"], 2)
    records = [*good[:2], rec, good[2]]
    before = snapshot(col)
    with pytest.raises(mmstore.MMStoreError) as err:
        col.ingest(records)
    e = err.value
    assert 400 <= e.http_status < 500, repr(e)
    assert (getattr(e, "record_id", None), getattr(e, "field", None)) == (name, bad.field)
    assert snapshot(col) == before, f"partial write: {bad.what}"
    report = col.ingest(records, on_error="skip")
    assert [(r.id, r.field) for r in report.rejected] == [(name, bad.field)], bad.what
    assert report.written == 3, bad.what
    assert snapshot(col).ids - before.ids == {g["id"] for g in good}, bad.what


PER_STRATEGY = 25


def explore(col: mmstore.Collection, strategy: st.SearchStrategy[Bad], ids: Ids) -> int:
    """Run ``refused_then_skipped`` on examples of ``strategy``; return how many ran."""
    rng, ran = np.random.default_rng(ids.n), [0]

    @settings(
        max_examples=PER_STRATEGY,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(bad=strategy)
    def check(bad: Bad) -> None:
        refused_then_skipped(col, bad, ids, rng)
        ran[0] += 1

    check()
    return ran[0]


def test_api_refuses_random_malformed_records_whole(env: Env) -> None:
    """Hypothesis: random malformed records of eleven shapes, up to 25 of each."""
    ids = Ids(700_000)
    with mmstore.open(env.folder / "property") as store:
        col = make_collection(store, env)
        seen = {what: explore(col, strategy, ids) for what, strategy in malformed_records().items()}
        assert verified(col)
        vectors = finite_vectors(col)
    assert len(seen) == len(malformed_records())
    shapes = ", ".join(f"{what} {n}" for what, n in seen.items())
    result = (
        f"Hypothesis, API: {sum(seen.values())} random malformed records ({shapes}) each "
        "refused whole with a typed error naming the record and field and 0 partial writes, "
        f"then left out alone by skip; 0 non-finite values among the {vectors:,} indexed "
        "vectors"
    )
    record("R9", "test_api_refuses_random_malformed_records_whole", result)
