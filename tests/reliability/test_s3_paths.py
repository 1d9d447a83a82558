"""S3: 0 path escapes over a corpus of traversal payloads.

Layout of each test: a store, one root folder (``roots``) holding a good image and clip,
and outside it a folder of sentinel files (a PNG with a marker after its end, a WAV, a
text secret) plus a sibling folder whose name starts with the root's name holding copies.
An escape is any of: a file of the test's folder outside the store and the root, or one
under /etc, opened for reading (an audit hook sees every ``open`` in every thread), a file
or folder created, renamed, removed or opened for writing outside the store (same hook,
and a before/after listing of the test's folder), a sentinel's bytes reaching an encoder
(a spy encoder records the digest of every value it encodes), a file named after a hostile
name or id anywhere in the test's folder, or a sentinel's content, digest or base64 in an
HTTP response.

The corpus (``payloads``, 56 per sentinel): absolute paths, ``Path`` objects, ``../``
chains from the root and from the working folder, ``..`` inside then out, dot segments,
doubled and leading slashes, ``..\\`` Windows forms, a drive letter, a UNC path,
URL-encoded, double-encoded and overlong-UTF-8 dots and slashes, a ``file://`` URL, NUL
bytes (after an existing file, at the end, in the root), a 5,000-character name, a
7,000-character path, 3,000 ``./`` before a ``..``, unicode lookalikes (one- and two-dot
leaders, fullwidth dots and solidus, division slash), ``~`` and ``~root`` expansion (HOME
points outside), symlinks inside the root to a file outside, to a folder outside, to ``/``,
a relative symlink climbing out, a self loop, a two-link cycle, a dangling link, ``..``
after a symlinked root and after a symlinked folder, trailing slash, trailing ``/.`` and
trailing dot forms, a sibling folder sharing the root's prefix, ``/proc/self/root``,
``/proc/self/cwd`` and ``/dev/fd/N`` aliases of the sentinel, ``/etc/passwd``, the root
and the outside folder themselves, a newline, and leading and trailing spaces.

Surfaces: image values given as paths (``keep="copy"`` and ``"reference"``) and as search
queries, audio values given as paths (both ``keep`` modes) and as queries; collection,
field and head names (API and HTTP); record ids (stored, never a path); a media digest
tampered in the catalog's stored source (image and audio) and a referenced path tampered
there (image and audio), each then re-embedded; an index manifest row whose file name is
tampered to point outside the index folder (also at a valid index file planted outside,
with its checksum forged); and the HTTP service's multipart part names
``<record id>/<field>``, part file names and path values in the records part.
Each refused payload must raise the typed error for its surface (RecordError naming the
record and field, InvalidInputError for queries, ConfigError for names, a 4xx for HTTP);
a few good paths (under the root, through a symlinked root, ``..`` staying inside) are
accepted, so refusals are not a surface refusing everything.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import Field

import mmstore
from mmstore.plugin.encoder import Encoder, EncoderParams
from mmstore.plugin.hookspecs import hookimpl
from mmstore.service.app import create_app
from mmstore.service.settings import Settings
from mmstore.storage.media import MediaStore
from mmstore.testing import FakePlugin
from tests.reliability.figures import record

MARKER = b"MMS-S3-SENTINEL-7f3a9c"
TOKEN = "zzpwn"  # in every hostile name and id: nothing on disk may ever carry it


# -- the watch: an audit hook that sees every open, write and rename ---------------------------
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
MUTATING = {
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.chmod",
    "os.utime",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
}


def _real(path: Any) -> str:
    raw = os.fsdecode(path)
    try:
        return os.path.realpath(raw)
    except (ValueError, OSError):
        return os.path.abspath(raw.replace("\0", "\\0"))


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f + os.sep) for f in folders)


class Watch:
    """While armed, lists every read under ``guarded`` but outside ``readable``, and every
    write, creation, rename or removal outside ``writable`` (bytecode caches aside)."""

    def __init__(self) -> None:
        self.armed = False
        self.guarded: list[str] = []
        self.readable: list[str] = []
        self.writable: list[str] = []
        self.escapes: list[str] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed:
            return
        try:
            if event == "open":
                self._open(*args[:3])
            elif event in MUTATING:
                for arg in args[:2]:
                    if isinstance(arg, str | bytes | os.PathLike):
                        self._write(event, _real(arg))
        except Exception as e:  # never break the code under test; report instead
            self.escapes.append(f"watch failed on {event}: {e!r}")

    def _open(self, path: Any, mode: Any, flags: Any) -> None:
        if path is None or isinstance(path, int):
            return
        real = _real(path)
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags > 0 and bool(flags & WRITE_FLAGS)
        )
        if writing:
            self._write("open for writing", real)
        elif _under(real, self.guarded) and not _under(real, self.readable):
            self.escapes.append(f"read {real}")

    def _write(self, what: str, real: str) -> None:
        if real.endswith(".pyc") and "__pycache__" in real:
            return
        if not _under(real, self.writable):
            self.escapes.append(f"{what} {real}")

    @contextlib.contextmanager
    def armed_for(self, lay: Layout) -> Iterator[list[str]]:
        self.guarded = [_real(lay.tmp), "/etc"]
        self.readable = [_real(lay.store), _real(lay.root)]
        self.writable = [_real(lay.store), os.devnull]  # subprocess opens /dev/null O_RDWR
        self.escapes = []
        self.armed = True
        try:
            yield self.escapes
        finally:
            self.armed = False


WATCH = Watch()
sys.addaudithook(WATCH)


# -- a spy encoder: what reaches an encoder -------------------------------------------------
class SpyParams(EncoderParams):
    dim: int = Field(8, ge=2, le=64)
    seed: int = 0


class SpyEncoder(Encoder):
    """Image and audio to 8 numbers from the bytes' sha256; records each digest seen."""

    name = "spy_bytes"
    version = "1"
    modalities = ("image", "audio")
    Params = SpyParams
    params: SpyParams
    seen: ClassVar[set[str]] = set()

    @property
    def dim(self) -> int:
        return self.params.dim

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        out = np.zeros((len(items), self.dim), np.float32)
        for row, value in enumerate(items):
            data = value.read() if modality == "image" else value.encoded()
            SpyEncoder.seen.add(MediaStore.digest(data))
            h = hashlib.sha256(f"{self.params.seed}:".encode() + data).digest()
            out[row] = np.frombuffer(h[: self.dim], np.uint8).astype(np.float32) - 127.5
        return out


class SpyPlugin:
    @hookimpl
    def mmstore_register_encoders(self) -> list[type[Encoder]]:
        return [SpyEncoder]


# -- layout ---------------------------------------------------------------------------------
def png(seed: int, tail: bytes = b"") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue() + tail


def wav(freq: float) -> bytes:
    t = np.arange(8000) / 16_000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000, format="WAV")
    return buf.getvalue()


@dataclass
class Layout:
    tmp: Path
    root: Path
    outside: Path
    sibling: Path
    store: Path
    secrets: dict[str, bytes] = field(default_factory=dict)
    fd_paths: dict[str, str] = field(default_factory=dict)

    def sentinel(self, ext: str) -> Path:
        return self.outside / f"sentinel.{ext}"

    @property
    def digests(self) -> set[str]:
        return {MediaStore.digest(b) for b in self.secrets.values()}


def _links(root: Path, outside: Path) -> None:
    links = {
        "escape.png": outside / "sentinel.png",
        "escape.wav": outside / "sentinel.wav",
        "escape_dir": outside,
        "to_slash": Path("/"),
        "rel_escape": Path("../outside"),
        "loop": Path("loop"),
        "cycle_a": Path("cycle_b"),
        "cycle_b": Path("cycle_a"),
        "dangling": Path("/nonexistent-mms-s3/x.png"),
    }
    for name, target in links.items():
        (root / name).symlink_to(target)


@pytest.fixture
def lay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Layout]:
    root, outside, sibling = tmp_path / "root", tmp_path / "outside", tmp_path / "root_sibling"
    for d in (root / "sub", outside, sibling, tmp_path / "cwd" / "a" / "b"):
        d.mkdir(parents=True)
    lay = Layout(tmp_path, root, outside, sibling, tmp_path / "store")
    lay.secrets = {"png": png(99, tail=MARKER), "wav": wav(1234.5), "txt": MARKER + b" secret"}
    for ext, data in lay.secrets.items():
        (outside / f"sentinel.{ext}").write_bytes(data)
        (sibling / f"sentinel.{ext}").write_bytes(data)
    (root / "ok.png").write_bytes(png(1))
    (root / "ok.wav").write_bytes(wav(440))
    _links(root, outside)
    (tmp_path / "rootlink").symlink_to(root)
    monkeypatch.setenv("HOME", str(outside))
    monkeypatch.chdir(tmp_path / "cwd" / "a" / "b")
    SpyEncoder.seen.clear()
    fds = {ext: os.open(lay.sentinel(ext), os.O_RDONLY) for ext in ("png", "wav")}
    lay.fd_paths = {ext: f"/dev/fd/{fd}" for ext, fd in fds.items()}  # the sentinel, open
    yield lay
    for fd in fds.values():
        os.close(fd)


def listing(lay: Layout) -> dict[str, tuple[int, int]]:
    """Every entry under the test's folder outside the store: size and mtime (links: 0)."""
    out = {}
    for dirpath, dirs, files in os.walk(lay.tmp):
        if Path(dirpath) == lay.tmp and "store" in dirs:
            dirs.remove("store")
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def token_paths(lay: Layout) -> list[str]:
    return [str(p) for p in lay.tmp.rglob(f"*{TOKEN}*")]


@contextlib.contextmanager
def guarded(lay: Layout) -> Iterator[list[str]]:
    """Run the body under the watch; afterwards add what changed on disk outside the store
    and any sentinel that reached an encoder to the escapes."""
    before = listing(lay)
    with WATCH.armed_for(lay) as escapes:
        yield escapes
    after = listing(lay)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    escapes += [f"changed on disk: {p}" for p in changed]
    escapes += [f"reached an encoder: {d}" for d in SpyEncoder.seen & lay.digests]
    escapes += [f"named on disk: {p}" for p in token_paths(lay)]


# -- the corpus -----------------------------------------------------------------------------
def payloads(lay: Layout, ext: str) -> list[tuple[str, Any]]:
    """(description, value) of every traversal payload aimed at ``sentinel.<ext>``."""
    r, o, name = str(lay.root), str(lay.outside), f"sentinel.{ext}"
    s = f"{o}/{name}"
    rel_s = s.lstrip("/")
    cwd_rel = os.path.relpath(s, Path.cwd())
    return [
        ("absolute path", s),
        ("Path object", Path(s)),
        ("../ from the root", f"{r}/../outside/{name}"),
        ("../ chain to / from the root", f"{r}/" + "../" * 40 + rel_s),
        ("relative ../ chain from the working folder", "../" * 40 + rel_s),
        ("relative ../ to the sentinel", cwd_rel),
        (".. inside then out", f"{r}/sub/../../outside/{name}"),
        ("dot segments", f"{r}/./.././outside/./{name}"),
        ("doubled slashes", f"{r}//..//outside//{name}"),
        ("leading double slash", "/" + s),
        ("..\\ Windows form", f"{r}\\..\\outside\\{name}"),
        ("mixed / and \\", f"{r}/..\\outside/{name}"),
        ("drive letter", f"C:\\..\\..\\{name}"),
        ("UNC path", f"\\\\localhost\\c$\\{name}"),
        ("URL-encoded ../", f"{r}/%2e%2e%2foutside%2f{name}"),
        ("URL-encoded dots", f"{r}/%2e%2e/outside/{name}"),
        ("double-encoded ../", f"{r}/%252e%252e%252foutside%252f{name}"),
        ("overlong UTF-8 dots", f"{r}/%c0%ae%c0%ae/outside/{name}"),
        ("file:// URL", f"file://{s}"),
        ("NUL after an allowed file", f"{r}/ok.{ext}\x00/../../outside/{name}"),
        ("NUL at the end", s + "\x00"),
        ("NUL in the root", f"{r}\x00/../outside/{name}"),
        ("5,000-character name", f"{r}/" + "a" * 5000),
        ("7,000-character path", f"{r}/" + "sub/" * 1750 + name),
        ("3,000 ./ then ..", f"{r}/" + "./" * 3000 + f"../outside/{name}"),
        ("one-dot leaders", f"{r}/\u2024\u2024/outside/{name}"),
        ("two-dot leader", f"{r}/\u2025/outside/{name}"),
        ("fullwidth dots and solidus", f"{r}/\uff0e\uff0e\uff0foutside\uff0f{name}"),
        ("division slash", f"{r}/..\u2215outside\u2215{name}"),
        ("~ expansion", f"~/{name}"),
        ("~root expansion", "~root/../" + rel_s),
        ("symlink in the root to the sentinel", f"{r}/escape.{ext}"),
        ("symlinked folder in the root", f"{r}/escape_dir/{name}"),
        ("symlink in the root to /", f"{r}/to_slash/{rel_s}"),
        ("relative symlink climbing out", f"{r}/rel_escape/{name}"),
        ("symlink loop", f"{r}/loop"),
        ("symlink loop as a folder", f"{r}/loop/{name}"),
        ("two-link cycle", f"{r}/cycle_a"),
        ("dangling symlink", f"{r}/dangling"),
        (".. after a symlinked root", f"{lay.tmp}/rootlink/../outside/{name}"),
        (".. after a symlinked folder", f"{r}/escape_dir/../outside/{name}"),
        ("trailing slash", s + "/"),
        ("trailing /.", s + "/."),
        ("trailing dot", f"{r}/../outside/{name}."),
        ("three dots", f"{r}/.../outside/{name}"),
        ("sibling folder sharing the root's prefix", f"{lay.sibling}/{name}"),
        ("/proc/self/root alias", f"/proc/self/root{s}"),
        ("/proc/self/cwd alias", f"/proc/self/cwd/{cwd_rel}"),
        ("/dev/fd alias of the open sentinel", lay.fd_paths[ext]),
        ("/etc/passwd", "/etc/passwd"),
        ("the root itself", r),
        ("the outside folder", o),
        ("the text secret", f"{o}/sentinel.txt"),
        ("newline", f"{r}/\n/../../outside/{name}"),
        ("leading space", " " + s),
        ("trailing space", s + " "),
    ]


def goods(lay: Layout, ext: str) -> list[tuple[str, Any]]:
    r = lay.root
    return [
        ("a file under the root", str(r / f"ok.{ext}")),
        ("a Path under the root", r / f"ok.{ext}"),
        (".. staying inside", f"{r}/sub/../ok.{ext}"),
        ("through a symlinked root", f"{lay.tmp}/rootlink/ok.{ext}"),
    ]


# -- helpers --------------------------------------------------------------------------------
def open_store(lay: Layout) -> mmstore.Store:
    return mmstore.open(lay.store, plugins=[FakePlugin(), SpyPlugin()])


def media_col(
    store: mmstore.Store, lay: Layout, name: str, modality: str, keep: str
) -> mmstore.Collection:
    return store.create_collection(
        name,
        encoders={modality: {"encoder": "spy_bytes"}},
        options={modality: {"roots": [str(lay.root)], "keep": keep}},
    )


def refused_record(
    col: mmstore.Collection, rid: str, value: Any, fieldname: str
) -> mmstore.RecordError:
    """Ingest one record: it must be refused with a RecordError naming it and the field."""
    try:
        col.ingest([{"id": rid, fieldname: value}])
    except mmstore.RecordError as e:
        assert e.record_id == rid and e.field == fieldname, e
        return e
    except Exception as e:
        raise AssertionError(f"{rid}: untyped {type(e).__name__}: {e}") from e
    raise AssertionError(f"{rid}: {value!r} was accepted")


def refused_query(col: mmstore.Collection, value: Any, fieldname: str) -> None:
    try:
        col.search(**{fieldname: value}, k=1)
    except mmstore.InvalidInputError:
        return
    except Exception as e:
        raise AssertionError(f"query {value!r}: untyped {type(e).__name__}: {e}") from e
    raise AssertionError(f"query {value!r} was accepted")


def config_error(fn: Callable[[], Any], what: str) -> None:
    try:
        fn()
    except mmstore.ConfigError:
        return
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__} instead of ConfigError: {e}") from e
    raise AssertionError(f"{what} was accepted")


# -- media paths ----------------------------------------------------------------------------
SURFACES = [("image", "copy"), ("image", "reference"), ("audio", "copy"), ("audio", "reference")]


def _refuse_all(lay: Layout, col: mmstore.Collection, modality: str, ext: str) -> int:
    corpus = payloads(lay, ext)
    for i, (_, value) in enumerate(corpus):
        refused_record(col, f"p{i}", value, modality)
    assert len(col) == 0, "a refused record was stored"
    return len(corpus)


def test_media_paths_never_escape_the_roots(lay: Layout) -> None:
    counts: dict[str, int] = {}
    with open_store(lay) as store, guarded(lay) as escapes:
        for modality, keep in SURFACES:
            ext = "png" if modality == "image" else "wav"
            col = media_col(store, lay, f"{modality}_{keep}", modality, keep)
            counts[f"{modality}/{keep}"] = _refuse_all(lay, col, modality, ext)
            if keep == "copy":
                for _, value in payloads(lay, ext):
                    refused_query(col, value, modality)
                counts[f"{modality} queries"] = len(payloads(lay, ext))
            good = goods(lay, ext)
            report = col.ingest([{"id": f"g{i}", modality: v} for i, (_, v) in enumerate(good)])
            assert report.written == len(good), report
    assert escapes == [], "path escapes:\n" + "\n".join(escapes)
    total = sum(counts.values())
    per = len(payloads(lay, "png"))
    record(
        "S3",
        "test_media_paths_never_escape_the_roots",
        f"0 escapes over {total} refusals: {per} traversal payloads each as image and audio "
        f"paths (keep copy and reference; RecordError naming record and field) and as "
        f"search queries (InvalidInputError); 4 good paths per surface accepted",
    )


# -- names ----------------------------------------------------------------------------------
BAD_NAMES: list[Any] = [
    f"../{TOKEN}",
    "..",
    ".",
    "",
    f"/{TOKEN}",
    f"/tmp/{TOKEN}",
    f"{TOKEN}/x",
    f"{TOKEN}\\x",
    f"{TOKEN}\n",
    f"\n{TOKEN}",
    f"{TOKEN}\x00",
    TOKEN.upper(),
    "\uff5a\uff5a\uff50\uff57\uff4e",
    f"%2e%2e%2f{TOKEN}",
    f"..%2f{TOKEN}",
    f"~{TOKEN}",
    "~",
    TOKEN * 13,
    f"-{TOKEN}",
    f" {TOKEN}",
    f"{TOKEN} ",
    f"{TOKEN}\u00e9",
    f"{TOKEN}.",
    f"{TOKEN}/",
    f"1{TOKEN}",
    f"_{TOKEN}",
    f"{TOKEN}-x",
    f"{TOKEN}\u2024\u2024",
    f"{TOKEN}\u202e",
    7,
    None,
    TOKEN.encode(),
]


def _name_surfaces(store: mmstore.Store, col: mmstore.Collection) -> dict[str, Callable[..., Any]]:
    text = {"text": {"encoder": "hash_text", "dim": 8}}
    return {
        "collection": lambda n: store.create_collection(n, encoders=text),
        "field": lambda n: store.create_collection("fields_ok", encoders={n: text["text"]}),
        "head (train)": lambda n: col.train_head(n, inputs=["text"], epochs=1),
        "head (predict)": lambda n: col.predict(n, ["d0"]),
    }


def _http_names(client: TestClient) -> int:
    n = 0
    for name in BAD_NAMES:
        if not isinstance(name, str):
            continue
        body = {"name": name, "encoders": {"text": {"encoder": "hash_text", "dim": 8}}}
        r = client.post("/collections", json=body)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        if name.strip(".") and "\x00" not in name:  # a client drops "." and ".." segments
            r = client.get(f"/collections/{quote(name, safe='')}")
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            path = f"/collections/docs/heads/{quote(name, safe='')}/predict"
            r = client.post(path, json={"records": ["d0"]})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        n += 1
    return n


def test_names_never_become_paths(lay: Layout) -> None:
    with open_store(lay) as store, guarded(lay) as escapes:
        col = store.create_collection("docs", encoders={"text": {"encoder": "hash_text"}})
        col.ingest(
            [{"id": f"d{i}", "text": f"word{i % 3}", "label": f"k{i % 2}"} for i in range(8)]
        )
        surfaces = _name_surfaces(store, col)
        for kind, fn in surfaces.items():
            for name in BAD_NAMES:
                config_error(partial(fn, name), f"{kind} name {name!r}")
        with TestClient(create_app(store, Settings(auth=False))) as client:
            http = _http_names(client)
        assert store.collections() == ["docs"]
    assert escapes == [], "path escapes:\n" + "\n".join(escapes)
    stored = sorted(p.name for p in (lay.store / "indexes").iterdir())
    assert stored == ["docs"], stored
    assert not (lay.store / "heads").exists() or os.listdir(lay.store / "heads/docs") == []
    record(
        "S3",
        "test_names_never_become_paths",
        f"0 escapes; {len(BAD_NAMES)} hostile names each refused with ConfigError as a "
        f"collection, field and head name (train and predict), and {http} over HTTP with 4xx",
    )


# -- record ids -----------------------------------------------------------------------------
def hostile_ids(lay: Layout) -> list[str]:
    return [
        f"../../{TOKEN}1",
        f"/tmp/{TOKEN}2",
        f"{lay.tmp}/{TOKEN}3",
        f"..\\..\\{TOKEN}4",
        f"%2e%2e%2f{TOKEN}5",
        f"~/{TOKEN}6",
        f"{TOKEN}7/../../..",
        f"{TOKEN}8\n",
        f"{TOKEN}17\x00/../..",
        f"\u202e{TOKEN}10",
        f"\uff0e\uff0e\uff0f{TOKEN}11",
        f"file:///{TOKEN}12",
        f"{TOKEN}13:stream",
        f"{TOKEN}14; rm -rf /",
        f"{lay.root}/../{TOKEN}15",
        f"{lay.root}/escape_dir/{TOKEN}16",
        "CON",
        "..",
        ".",
    ]


def test_record_ids_never_become_paths(lay: Layout) -> None:
    ids = hostile_ids(lay)
    with open_store(lay) as store, guarded(lay) as escapes:
        text = store.create_collection("docs", encoders={"text": {"encoder": "hash_text"}})
        image = media_col(store, lay, "pics", "image", "copy")
        audio = media_col(store, lay, "clips", "audio", "copy")
        text.ingest(
            [{"id": rid, "text": f"alpha{i} beta{i} gamma{i}"} for i, rid in enumerate(ids)]
        )
        image.ingest([{"id": rid, "image": png(i)} for i, rid in enumerate(ids)])
        audio.ingest([{"id": rid, "audio": wav(300 + 10 * i)} for i, rid in enumerate(ids)])
        for col in (text, image, audio):
            assert [r["id"] for r in col.get(ids)] == ids
            hits = col.search(record=ids[0], k=len(ids)).ids
            assert len(hits) == len(ids) - 1 and set(hits) < set(ids), hits
            assert col.delete(ids[:3]) == 3
        for bad in ("", f"{TOKEN}9" + "/.." * 2000):
            refused = text.ingest([{"id": bad, "text": "x"}], on_error="skip").rejected
            assert [r.field for r in refused] == ["id"], refused  # named "#0" or cut short
        assert len(text) == len(ids) - 3
    assert escapes == [], "path escapes:\n" + "\n".join(escapes)
    record(
        "S3",
        "test_record_ids_never_become_paths",
        f"0 escapes; {len(ids)} traversal-shaped record ids stored, found, searched and "
        "deleted in text, image and audio collections, never a path; an empty and a "
        "6,000-character id refused as records",
    )


# -- tampered sources -----------------------------------------------------------------------
def tamper(store: mmstore.Store, col: str, rid: str, fieldname: str, source: Any) -> None:
    with store.catalog.transaction() as conn:
        raw = conn.execute(
            sa.text("SELECT sources FROM mms_records WHERE collection = :c AND id = :i"),
            {"c": col, "i": rid},
        ).scalar_one()
        sources = json.loads(raw) | {fieldname: source}
        conn.execute(
            sa.text("UPDATE mms_records SET sources = :s WHERE collection = :c AND id = :i"),
            {"s": json.dumps(sources), "c": col, "i": rid},
        )


def traversal_digests(lay: Layout, ext: str) -> list[str]:
    """``sha256:`` + 64 characters that, joined under the media folder as ``ab/cd...``,
    climb to the sentinel (relative and absolute), and other non-hex digests."""
    rel = os.path.relpath(lay.sentinel(ext), lay.store)  # from media/.. = the store
    pad = 62 - len(rel)
    relative = ".." + "./" * (pad // 2) + "/" * (pad % 2) + rel
    absolute = ".." + "/" * (62 - len("/etc/passwd")) + "/etc/passwd"  # media/.. + //..//etc
    real = MediaStore.digest(lay.secrets[ext]).removeprefix("sha256:")
    out = [relative, absolute, real.upper(), "../" * 21 + "x", real[:62] + "\n\n"]
    assert all(len(d) == 64 for d in out), [len(d) for d in out]
    return ["sha256:" + d for d in out]


def _media_sources(lay: Layout, modality: str, ext: str, base: dict[str, Any]) -> list[Any]:
    shape = {k: v for k, v in base.items() if k not in ("media", "path", "sha256")}
    return [{"media": d, **shape} for d in traversal_digests(lay, ext)]


def _reference_sources(lay: Layout, modality: str, ext: str, base: dict[str, Any]) -> list[Any]:
    shape = {k: v for k, v in base.items() if k not in ("media", "path", "sha256")}
    digest = MediaStore.digest(lay.secrets[ext])
    sha = digest if modality == "image" else digest.removeprefix("sha256:")
    r = lay.root
    paths = [
        str(lay.sentinel(ext)),
        f"{r}/../outside/sentinel.{ext}",
        f"{r}/escape.{ext}",
        f"{r}/escape_dir/sentinel.{ext}",
        f"{lay.sibling}/sentinel.{ext}",
        f"{r}/ok.{ext}\x00/../../outside/sentinel.{ext}",
        os.path.relpath(lay.sentinel(ext)),
    ]
    return [{"path": p, "sha256": sha, **shape} for p in paths]


def _reembed_refuses(
    store: mmstore.Store, col: mmstore.Collection, modality: str, sources: list[Any], seed: int
) -> int:
    """Per source: a fresh record, its stored source replaced, then a re-embedding (with
    ``skip``) that must reject exactly that record and encode the good one."""
    good = str(store.path.parent / "root" / ("ok.png" if modality == "image" else "ok.wav"))
    for k, source in enumerate(sources):
        rid = f"bad{k}"
        col.ingest({"id": rid, modality: good})
        tamper(store, col.name, rid, modality, source)
        seed += 1
        encoder = {"encoder": "spy_bytes", "seed": seed}
        report = col.reembed(modality, encoder=encoder, on_error="skip")
        assert [(r.id, r.field) for r in report.rejected] == [(rid, modality)], (source, report)
        assert report.encoded == 1, report
    return seed


def test_tampered_sources_never_read_outside(lay: Layout) -> None:
    n, seed = 0, 0
    with open_store(lay) as store, guarded(lay) as escapes:
        for modality, keep in SURFACES:
            ext = "png" if modality == "image" else "wav"
            col = media_col(store, lay, f"{modality}_{keep}", modality, keep)
            col.ingest([{"id": "ok", modality: str(lay.root / f"ok.{ext}")}])
            base = col.get("ok")[0][modality]
            make = _media_sources if keep == "copy" else _reference_sources
            sources = make(lay, modality, ext, base)
            seed = _reembed_refuses(store, col, modality, sources, seed)
            n += len(sources)
    assert escapes == [], "path escapes:\n" + "\n".join(escapes)
    record(
        "S3",
        "test_tampered_sources_never_read_outside",
        f"0 escapes over {n} tampered catalog sources (media digests climbing out of the "
        "media folder, referenced paths outside the roots with the sentinel's true sha256), "
        "image and audio, each re-embedded: the record rejected by name, 0 bytes read",
    )


def _manifest_files(lay: Layout, own: Path) -> list[tuple[str, str | None]]:
    """(file name, checksum to forge or None) aimed outside the index folder; the last
    two name a valid index file planted outside, with its true checksum."""
    planted = lay.outside / own.name
    planted.write_bytes(own.read_bytes())
    forged = hashlib.sha256(own.read_bytes()).hexdigest()
    return [
        ("../../../outside/sentinel.txt", None),
        (str(lay.sentinel("txt")), None),
        ("/etc/passwd", None),
        ("../" * 30 + "etc/passwd", None),
        (f"{own.name}\x00../../x", None),
        (str(planted), forged),
        (f"../../../outside/{own.name}", forged),
    ]


MANIFEST = sa.table("mms_indexes", sa.column("file"), sa.column("checksum"))


def test_tampered_index_manifest_never_reads_outside(lay: Layout) -> None:
    texts = [f"alpha{i} beta{i % 3}" for i in range(20)]
    with open_store(lay) as store:
        col = store.create_collection("docs", encoders={"text": {"encoder": "hash_text"}})
        col.ingest([{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
        before = col.search(text="beta1", k=5).ids
    (own,) = (lay.store / "indexes" / "docs").glob("text-*.mmi")
    cases = _manifest_files(lay, own)
    for name, checksum in cases:
        with open_store(lay) as store, store.catalog.transaction() as conn:
            forged = {"checksum": checksum} if checksum else {}
            conn.execute(sa.update(MANIFEST).values(file=name, **forged))
        with open_store(lay) as store, guarded(lay) as escapes:
            col = store.collection("docs")
            assert col.search(text="beta1", k=5).ids == before, name
            (report,) = col.verify()
            assert report["missing_from_index"] == report["not_in_catalog"] == 0, report
        assert escapes == [], f"{name!r}: path escapes:\n" + "\n".join(escapes)
    with open_store(lay) as store:
        (report,) = store.collection("docs").verify()
        assert report["ok"] and report["file"] == "current", report
        with store.catalog.reading() as conn:
            assert conn.execute(sa.select(MANIFEST.c.file)).scalars().all() == [own.name]
    record(
        "S3",
        "test_tampered_index_manifest_never_reads_outside",
        f"0 escapes over {len(cases)} index manifest rows tampered to name files outside the "
        "index folder (2 with a planted valid index file and its forged checksum): never "
        "read, rebuilt from the catalog, search results identical, manifest repaired",
    )


# -- the HTTP service ----------------------------------------------------------------------
def _multipart(
    client: TestClient,
    records: list[dict[str, Any]],
    parts: list[tuple[str, str, bytes]],
    **form: str,
) -> Any:
    fields = {"records": json.dumps(records), **form}
    files: list[tuple[str, tuple[str | None, Any, str | None]]] = [
        (name, (None, value, None)) for name, value in fields.items()
    ]  # form fields as parts, so that the body is multipart even with no file
    files += [
        (name, (filename, data, "application/octet-stream")) for name, filename, data in parts
    ]
    return client.post("/collections/pics/records/media", files=files)


def _leaks(lay: Layout, text: str) -> list[str]:
    needles = [MARKER.decode(), *(d.removeprefix("sha256:") for d in lay.digests)]
    needles += [base64.b64encode(b).decode()[:40] for b in lay.secrets.values()]
    return [n for n in needles if n in text]


def test_http_part_names_never_become_paths(lay: Layout) -> None:
    ids = [i for i in hostile_ids(lay) if i.isprintable()]  # a form encodes the others
    bodies: list[str] = []
    with open_store(lay) as store, guarded(lay) as escapes:
        media_col(store, lay, "pics", "image", "copy")
        with TestClient(create_app(store, Settings(auth=False))) as client:
            parts = [
                (f"{rid}/image", f"../../../{TOKEN}{i}.png", png(i)) for i, rid in enumerate(ids)
            ]
            r = _multipart(client, [{"id": rid} for rid in ids], parts)
            assert r.status_code == 200 and r.json()["written"] == len(ids), r.text
            bodies.append(r.text)
            bad_names = ["image", "/image", "p0/", "nobody/image", "p0/../image", "p0/image/.."]
            for name in bad_names:
                r = _multipart(client, [{"id": "p0"}], [(name, "x.png", png(50))])
                assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
                bodies.append(r.text)
            values = [v for _, v in payloads(lay, "png") if isinstance(v, str) and "\x00" not in v]
            records = [{"id": f"q{i}", "image": v} for i, v in enumerate(values)]
            r = _multipart(client, records, [], on_error="skip")
            assert r.status_code == 200, r.text
            assert sorted(x["id"] for x in r.json()["rejected"]) == sorted(x["id"] for x in records)
            bodies.append(r.text)
            r = _multipart(client, records[:1], [])
            assert r.status_code == 422 and r.json()["record"] == "q0", r.text
            bodies.append(r.text)
            r = client.get("/collections/pics/records", params={"ids": ",".join(ids)})
            assert r.status_code == 200 and len(r.json()["records"]) == len(ids), r.text
    assert escapes == [], "path escapes:\n" + "\n".join(escapes)
    leaks = [leak for body in bodies for leak in _leaks(lay, body)]
    assert leaks == [], f"sentinel content in responses: {leaks}"
    record(
        "S3",
        "test_http_part_names_never_become_paths",
        f"0 escapes, 0 sentinel bytes in {len(bodies)} responses: {len(ids)} traversal-shaped "
        f"part names and file names stored as ids only, {len(bad_names)} malformed part names "
        f"4xx, {len(values)} path payloads in the records part rejected naming the record",
    )
