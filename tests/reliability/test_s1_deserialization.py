"""S1: 0 unsafe deserialization calls in the source, and a malicious artifact is rejected.

The source: an ``ast`` scanner reads every ``.py`` file of mmstore/, plugins/, examples/,
benchmarks/ and migrations/ and finds pickle, cPickle, _pickle, dill and cloudpickle
``load``/``loads``/``Unpickler``, ``joblib.load``, ``torch.load`` without a literal
``weights_only=True``, ``numpy.load`` with ``allow_pickle`` other than a literal False,
``yaml.load`` without a safe Loader, ``yaml.unsafe_load``/``full_load``, ``marshal.load(s)``,
``shelve.open``, ``pandas.read_pickle``, ``eval``/``exec`` on anything, the same names
imported under aliases or passed around uncalled, and dynamic or star imports of the
pickle-like modules. The scanner is shown to bite on a crafted source holding each of
those, and to pass the safe forms (``torch.load(f, weights_only=True)``,
``np.load(f, allow_pickle=False)``, ``yaml.safe_load``, ``model.eval()``...).

The artifacts: a classifier head is trained on a small store, then its files are replaced,
one at a time, by bad ones: weights that are a pickle whose unpickling creates a marker file
(a positive control shows it does), a ``torch.save`` archive with the same payload,
safetensors headers declaring a 2**62-byte header, shapes whose size overflows, offsets
beyond the file, real tensor names with swapped shapes, a missing tensor; a head.json that
is not UTF-8, not JSON, a JSON list, nested 100,000 deep, ``{}``, with wrong or absurd
dimensions, an absurd hidden width, one class, an extra class, another kind, and a
path-like name; and head names that are paths. ``col.predict`` (and ``col.heads()`` where it
reads the file) must raise a typed :class:`mmstore.MMStoreError`, the marker must never
exist, and the untouched head predicts as before.

The index: a collection's index file is replaced by crafted bytes (the pickle payload, a
bare FAISS index of other vectors, a valid mmstore index file of another store, an mmstore
header declaring absurd offsets, one declaring a 2**63-byte header); each is caught by the
checksum in the catalog before any parser sees it (the loader is spied on), rebuilt from
the catalog, ``col.verify()`` finds catalog and index equal, searches give exactly the
results from before, and the file is rewritten to match its manifest.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import pickle
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import mmstore
from mmstore.heads.artifacts import META, WEIGHTS
from mmstore.index import file as indexfile
from mmstore.plugin.events import Event, IndexRebuilt
from mmstore.plugin.hookspecs import hookimpl
from mmstore.testing import FakePlugin
from tests.reliability.figures import record

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("mmstore", "plugins", "examples", "benchmarks", "migrations")

# -- the scanner --------------------------------------------------------------------------
PICKLERS = ("pickle", "cPickle", "_pickle", "dill", "cloudpickle")
ALWAYS = {f"{m}.{f}" for m in PICKLERS for f in ("load", "loads", "Unpickler")} | {
    "joblib.load",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "pandas.read_pickle",
    "pandas.io.pickle.read_pickle",
    "yaml.unsafe_load",
    "yaml.unsafe_load_all",
    "yaml.full_load",
    "yaml.full_load_all",
    "builtins.eval",
    "builtins.exec",
}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
NUMPY_LOADS = {"numpy.load"}
YAML_LOADS = {"yaml.load", "yaml.load_all"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
CHECKED = TORCH_LOADS | NUMPY_LOADS | YAML_LOADS
RISKY_MODULES = {*PICKLERS, "joblib", "marshal", "shelve"}
DYNAMIC_IMPORTS = {"builtins.__import__", "importlib.import_module"}


def aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted name it was imported as (``np`` -> ``numpy``)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """The dotted name an expression refers to, through imports; None if not a name."""
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        return f"builtins.{node.id}" if node.id in ("eval", "exec", "__import__") else None
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, names)
        return f"{base}.{node.attr}" if base else None
    return None


def _kwarg(call: ast.Call, name: str, position: int) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_call(call: ast.Call, name: str, names: dict[str, str]) -> str | None:
    """Why a call of ``name`` can run code or unpickle, or None when it cannot."""
    if name in ALWAYS:
        return f"{name}()"
    if name in TORCH_LOADS and not _is_const(_kwarg(call, "weights_only", 99), True):
        return f"{name}() without weights_only=True"
    if name in NUMPY_LOADS:
        allow = _kwarg(call, "allow_pickle", 2)
        if allow is not None and not _is_const(allow, False):
            return f"{name}() with allow_pickle not False"
    if name in YAML_LOADS:
        loader = _kwarg(call, "Loader", 1)
        if loader is None or dotted(loader, names) not in SAFE_YAML_LOADERS:
            return f"{name}() without a safe Loader"
    if name in DYNAMIC_IMPORTS and call.args:
        first = call.args[0]
        if isinstance(first, ast.Constant) and str(first.value).split(".")[0] in RISKY_MODULES:
            return f"{name}({first.value!r})"
    return None


def scan_source(text: str, filename: str) -> list[str]:
    """``file:line: what`` for each unsafe deserialization in one source."""
    tree = ast.parse(text, filename)
    names = aliases(tree)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found: list[str] = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Call) and (name := dotted(node.func, names)):
            what = unsafe_call(node, name, names)
        elif isinstance(node, ast.Name | ast.Attribute) and id(node) not in called:
            name = dotted(node, names)
            if name in ALWAYS | CHECKED and not isinstance(node.ctx, ast.Store):
                what = f"{name} passed uncalled (its arguments cannot be checked)"
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module in RISKY_MODULES
            and any(a.name == "*" for a in node.names)
        ):
            what = f"from {node.module} import *"
        if what:
            found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")
    return sorted(set(found), key=lambda f: int(f.split(":")[1]))


def source_files() -> list[Path]:
    """Our Python files: not what git ignores (benchmarks/out holds the peers' virtual
    environment, third-party code)."""
    ours = (p for d in SCANNED for p in (REPO / d).rglob("*.py"))
    return sorted(p for p in ours if not _ignored(p.relative_to(REPO)))


def _ignored(rel: Path) -> bool:
    return rel.parts[:2] == ("benchmarks", "out") or "site-packages" in rel.parts


CRAFTED = """\
import pickle, cPickle, _pickle, dill, cloudpickle, joblib, marshal, shelve, importlib
import pickle as pk
import numpy as np
import numpy
import pandas as pd
import torch
import yaml
import builtins
from pickle import loads as fast_loads
from torch import load as tload
pickle.load(f)  # unsafe
pickle.loads(b)  # unsafe
pickle.Unpickler(f).load()  # unsafe
class U(pickle.Unpickler): pass  # unsafe
pk.loads(b)  # unsafe
fast_loads(b)  # unsafe
cPickle.loads(b)  # unsafe
_pickle.load(f)  # unsafe
dill.loads(b)  # unsafe
cloudpickle.load(f)  # unsafe
joblib.load(path)  # unsafe
torch.load(path)  # unsafe
torch.load(path, weights_only=False)  # unsafe
torch.load(path, weights_only=flag)  # unsafe
tload(path)  # unsafe
torch.serialization.load(path)  # unsafe
np.load(path, allow_pickle=True)  # unsafe
numpy.load(path, None, True)  # unsafe
np.load(path, allow_pickle=flag)  # unsafe
yaml.load(text)  # unsafe
yaml.load(text, Loader=yaml.Loader)  # unsafe
yaml.load_all(text, yaml.UnsafeLoader)  # unsafe
yaml.unsafe_load(text)  # unsafe
yaml.full_load(text)  # unsafe
marshal.load(f)  # unsafe
marshal.loads(b)  # unsafe
shelve.open(path)  # unsafe
pd.read_pickle(path)  # unsafe
eval(text)  # unsafe
exec(code)  # unsafe
builtins.eval("1")  # unsafe
loader = pickle.loads  # unsafe
run(torch.load)  # unsafe
importlib.import_module("pickle")  # unsafe
__import__("dill")  # unsafe
from marshal import *  # unsafe
torch.load(path, weights_only=True)
tload(path, map_location="cpu", weights_only=True)
np.load(path)
np.load(path, allow_pickle=False)
numpy.load(path, mmap_mode="r", allow_pickle=False)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
yaml.load(text, yaml.CSafeLoader)
model.eval()
json.loads(text)
pickle.dumps(obj)
pd.read_parquet(path)
importlib.import_module("json")
"""


def test_no_unsafe_deserialization_in_the_source() -> None:
    files = source_files()
    assert len(files) > 50, f"the scan found only {len(files)} files under {SCANNED}"
    findings = [
        f
        for p in files
        for f in scan_source(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))
    ]
    assert findings == [], "unsafe deserialization in the source:\n" + "\n".join(findings)
    record(
        "S1",
        "test_no_unsafe_deserialization_in_the_source",
        f"0 unsafe deserialization calls in {len(files)} files of {', '.join(SCANNED)}",
    )


def test_the_scanner_finds_every_crafted_pattern() -> None:
    lines = CRAFTED.splitlines()
    unsafe = {i for i, line in enumerate(lines, 1) if line.endswith("# unsafe")}
    safe = {i for i, line in enumerate(lines, 1) if i > max(unsafe)}
    found = scan_source(CRAFTED, "crafted.py")
    hit = {int(f.split(":")[1]) for f in found}
    missed = [lines[i - 1] for i in sorted(unsafe - hit)]
    wrongly = [lines[i - 1] for i in sorted(hit - unsafe)]
    assert not missed, f"the scanner missed: {missed}"
    assert not wrongly, f"the scanner flagged safe forms: {wrongly}"
    assert len(unsafe) >= 30 and len(safe) >= 12
    record(
        "S1",
        "test_the_scanner_finds_every_crafted_pattern",
        f"{len(unsafe & hit)} of {len(unsafe)} crafted unsafe patterns found; "
        f"0 of {len(safe)} safe forms flagged",
    )


# -- malicious head artifacts -------------------------------------------------------------
SPEC = {
    "a": {"encoder": "precomputed", "modality": "vector", "dim": 16},
    "b": {"encoder": "precomputed", "modality": "vector", "dim": 8},
}
IDS = ["v0", "v1", "v2", "v5"]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appearing is code having run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"weight": _Payload(marker)})


def torch_payload(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"weight": _Payload(marker)}, buf)
    return buf.getvalue()


def vector_records(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 24)) * 3
    out = []
    for i in range(n):
        x = (centers[i % 3] + rng.normal(size=24)).astype(np.float32)
        out.append(
            {"id": f"v{i}", "label": f"k{i % 3}", "a": x[:16].tolist(), "b": x[16:].tolist()}
        )
    return out


@dataclass
class Head:
    col: mmstore.Collection
    folder: Path
    weights: bytes
    meta: dict[str, Any]
    before: list[dict[str, Any]]

    def restore(self) -> None:
        (self.folder / WEIGHTS).write_bytes(self.weights)
        (self.folder / META).write_text(json.dumps(self.meta))


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    path = tmp_path_factory.mktemp("s1_heads") / "store"
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.create_collection("items", encoders=SPEC)
        col.ingest(vector_records(60))
        report = col.train_head("clf", inputs=["a", "b"], epochs=3, patience=2, batch_size=32)
        meta = json.loads((report.path / META).read_text())
        weights = (report.path / WEIGHTS).read_bytes()
        yield Head(col, report.path, weights, meta, col.predict("clf", IDS))


def safetensors_file(header: dict[str, Any], data: bytes = b"", length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _weights_cases(h: Head, marker: Path) -> dict[str, bytes]:
    folder = marker.parent
    tensors = load_file(h.folder / WEIGHTS)
    names = sorted(tensors)
    real = names[0]
    swapped = dict(tensors)
    big = max(names, key=lambda k: tensors[k].ndim * 1000 + tensors[k].numel())
    swapped[big] = tensors[big].t().contiguous().clone()  # same bytes, other shape
    missing = {k: v for k, v in tensors.items() if k != names[-1]}
    return {
        "pickle payload as weights": pickle_payload(marker),
        "torch.save archive with the payload": torch_payload(marker),
        "safetensors header length 2**62": safetensors_file({}, length=2**62),
        "safetensors shape overflowing": safetensors_file(
            {real: {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 2**63]}}
        ),
        "safetensors offsets beyond the file": safetensors_file(
            {real: {"dtype": "F32", "shape": [4, 4], "data_offsets": [2**40, 2**40 + 64]}},
            bytes(64),
        ),
        "safetensors offsets reversed": safetensors_file(
            {real: {"dtype": "F32", "shape": [4, 4], "data_offsets": [64, 0]}}, bytes(64)
        ),
        "real names, a shape swapped": _saved(swapped, folder),
        "a tensor missing": _saved(missing, folder),
    }


def _saved(tensors: dict[str, torch.Tensor], folder: Path) -> bytes:
    path = folder / "crafted.safetensors"
    save_file(tensors, path)
    return path.read_bytes()


#: head.json cases that listing heads reads too (the others only break loading the model)
LISTING_BREAKS = frozenset(
    {"not UTF-8", "not JSON", "a JSON list", "nested 100,000 deep", "{}", "no lineage", "a path"}
)


def _meta_cases(h: Head) -> dict[str, bytes]:
    m = h.meta

    def with_(**changes: Any) -> bytes:
        return json.dumps(m | changes).encode()

    return {
        "not UTF-8": b"\x80\xffnot json",
        "not JSON": b"{'kind': 'classifier',",
        "a JSON list": b"[1, 2, 3]",
        "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
        "{}": b"{}",
        "wrong dims": with_(dims={"a": 17, "b": 8}),
        "absurd dims": with_(dims={"a": 10**12, "b": 10**12}),
        "absurd hidden width": with_(config=m["config"] | {"hidden": 10**9}),
        "one class": with_(classes=["k0"]),
        "an extra class": with_(classes=[*m["classes"], "k9"]),
        "another kind": with_(kind="retrieval"),
        "no lineage": with_(lineage={"fields": "x"}),
        "a path": with_(name="../../../../outside"),
    }


def _typed(fn: Callable[[], Any]) -> str:
    """Call ``fn``: it must raise an MMStoreError; return the error's class name."""
    try:
        fn()
    except mmstore.MMStoreError as e:
        assert str(e), "a typed error must say what failed"
        return type(e).__name__
    except BaseException as e:
        raise AssertionError(f"untyped {type(e).__name__}: {e}") from e
    raise AssertionError("a tampered head was used without an error")


def test_payload_control_creates_its_marker(tmp_path: Path) -> None:
    """The payload is live: unpickled on purpose (here only), it creates the marker."""
    marker = tmp_path / "control"
    pickle.loads(pickle_payload(marker))
    assert marker.exists()
    marker.unlink()
    torch.load(io.BytesIO(torch_payload(marker)), weights_only=False)
    assert marker.exists()


def test_malicious_head_artifacts_are_rejected(head: Head, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    weights, metas = _weights_cases(head, marker), _meta_cases(head)
    errors: dict[str, str] = {}
    try:
        for case, data in weights.items():
            (head.folder / WEIGHTS).write_bytes(data)
            errors[case] = _typed(lambda: head.col.predict("clf", IDS))
            assert not marker.exists(), f"{case}: the payload ran"
            head.restore()
        for case, data in metas.items():
            (head.folder / META).write_bytes(data)
            errors[f"head.json {case}"] = _typed(lambda: head.col.predict("clf", IDS))
            if case in LISTING_BREAKS:
                errors[f"head.json {case} (heads)"] = _typed(head.col.heads)
            else:
                assert [h["name"] for h in head.col.heads()] == ["clf"]
            head.restore()
    finally:
        head.restore()
    for name in ("../items/clf", "/etc/passwd", "clf/../clf", "CLF", "clf\n", ""):
        errors[f"head name {name!r}"] = _typed(partial(head.col.predict, name, IDS))
        assert errors[f"head name {name!r}"] == "ConfigError", name
    assert not marker.exists()
    assert head.col.predict("clf", IDS) == head.before
    assert "DamagedHeadError" in errors.values()
    rejected = len(weights) + len(metas)
    record(
        "S1",
        "test_malicious_head_artifacts_are_rejected",
        f"{rejected} of {rejected} malicious head artifacts ({len(weights)} weights files, "
        f"{len(metas)} head.json) and 6 path-like head names rejected with typed errors "
        f"({', '.join(sorted(set(errors.values())))}); 0 markers created",
    )


# -- crafted index files ------------------------------------------------------------------
class Events:
    """Records the events the store tracks."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    @hookimpl
    def mmstore_track_event(self, event: Event) -> None:
        self.seen.append(event)


TEXTS = [f"{a} {b} {c}" for a in ("red", "green", "blue") for b in ("apple", "pear") for c in "xyz"]


def _index_cases(marker: Path, other_index: bytes) -> dict[str, bytes]:
    from mmstore.index.backend import faiss

    flat = faiss.IndexFlatIP(32)
    flat.add(np.random.default_rng(1).normal(size=(10, 32)).astype(np.float32))
    absurd = json.dumps(
        {
            "format": 2,
            "dim": 32,
            "size": 2**40,
            "tail": 2**40,
            "ef_search": 64,
            "tuned_recall": None,
            "layout": {k: [2**60, 2**62] for k in ("vids", "dead", "tail", "hnsw")},
        }
    ).encode()
    return {
        "pickle payload": pickle_payload(marker),
        "bare FAISS index of other vectors": faiss.serialize_index(flat).tobytes(),
        "valid index file of another store": other_index,
        "mmstore header with absurd offsets": indexfile.MAGIC
        + struct.pack("<Q", len(absurd))
        + absurd,
        "mmstore header 2**63 bytes long": indexfile.MAGIC + struct.pack("<Q", 2**63) + b"{}",
    }


def _search(col: mmstore.Collection) -> list[tuple[list[str], list[float]]]:
    out = []
    for q in ("red apple", "blue pear z", "green"):
        hits = col.search(text=q, k=8)
        out.append((hits.ids, [round(float(s), 6) for s in hits.scores]))
    return out


def _make_store(path: Path, texts: list[str]) -> tuple[list[Any], Path]:
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.create_collection(
            "docs", encoders={"text": {"encoder": "hash_text", "dim": 32}}
        )
        col.ingest([{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
        results = _search(col)
    (file,) = (path / "indexes" / "docs").glob("text-*.mmi")
    return results, file


def test_crafted_index_files_are_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, file = _make_store(tmp_path / "store", TEXTS)
    _, other = _make_store(tmp_path / "other", [*TEXTS[::-1], "yellow plum"])
    marker = tmp_path / "PWNED"
    parsed: list[str] = []
    real_load = indexfile.load

    def spy(data: bytes, options: Any = None) -> Any:
        parsed.append(hashlib.sha256(data).hexdigest())
        return real_load(data, options)

    monkeypatch.setattr(indexfile, "load", spy)
    cases = _index_cases(marker, other.read_bytes())
    for case, data in cases.items():
        file.write_bytes(data)
        events = Events()
        with mmstore.open(tmp_path / "store", plugins=[FakePlugin(), events]) as store:
            col = store.collection("docs")
            (report,) = col.verify()
            assert report["missing_from_index"] == report["not_in_catalog"] == 0, (case, report)
            assert report["catalog_vectors"] == report["index_vectors"] == len(TEXTS)
            assert _search(col) == before, case
        rebuilt = [e for e in events.seen if isinstance(e, IndexRebuilt)]
        assert rebuilt and "checksum" in rebuilt[0].reason, (case, rebuilt)
        assert hashlib.sha256(data).hexdigest() not in parsed, f"{case}: the loader parsed it"
        assert not marker.exists()
        assert file.read_bytes() != data, f"{case}: the crafted file was kept"
        parsed.clear()
        with mmstore.open(tmp_path / "store", plugins=[FakePlugin()]) as store:
            (report,) = store.collection("docs").verify()
            assert report["ok"] and report["file"] == "current", (case, report)
        assert parsed, "the rewritten file is loaded again (checksum matches)"
    record(
        "S1",
        "test_crafted_index_files_are_never_loaded",
        f"{len(cases)} of {len(cases)} crafted index files caught by the catalog checksum "
        "before parsing, rebuilt, search results identical; 0 markers created",
    )
