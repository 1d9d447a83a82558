"""The R8 workload and its checks, shared by the in-process injector (our own file
operations) and the libfiu child (DuckDB's system calls), and the in-process injector.

One *cycle* on a copy of a template store: open, ingest a batch (new records with text and
audio, whose bytes go to the media store, and updates of template records), flush the
indexes, close. A fault is injected at the n-th file operation of the cycle, once or at
every later operation of the same kind (a disk that stays full). Then the fault is lifted
("space freed") and :func:`check_after` proves: the store opens, the batch is all there or
not at all (all there when ``ingest`` returned), each index equals the catalog, a search by
each record's text finds it, no temporary file is left, and a new batch ingests."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

import mmstore
from mmstore.errors import NotFoundError, StorageError
from mmstore.testing import FakePlugin

FIELDS = {
    "text": {"encoder": "hash_text", "dim": 64},
    "audio": {"encoder": "logmel", "n_mels": 16},
}
NEW, UPDATED = 6, 2  # per batch: new records, and template records it updates
TEMPLATE = 10


def wav(seed: int) -> bytes:
    """A distinct half-second tone as WAV bytes (below the 8 kHz Nyquist limit for any seed
    under 7,000: 200 + 37 * 5400 Hz aliased to silence)."""
    t = np.arange(8000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (200 + (37 * seed) % 7000) * t)
    buf = io.BytesIO()
    sf.write(buf, tone.astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def text(rid: str, batch: int) -> str:
    return f"record {rid} written by batch {batch}"


def batch(b: int) -> list[dict[str, Any]]:
    """Batch ``b``: new records ``b{b}-j`` and updates of template records ``t{j}``."""
    new = [
        {"id": f"b{b}-{j}", "text": text(f"b{b}-{j}", b), "audio": wav(100 * b + j)}
        for j in range(NEW)
    ]
    updates = [
        {"id": f"t{j}", "text": text(f"t{j}", b), "audio": wav(100 * b + 50 + j)}
        for j in range(b % 4, b % 4 + UPDATED)
    ]
    return new + updates


def make_template(path: Path) -> None:
    """The store every scenario starts from: a collection of ``TEMPLATE`` records, closed."""
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.create_collection("io", FIELDS)
        col.ingest(
            [{"id": f"t{j}", "text": text(f"t{j}", 0), "audio": wav(j)} for j in range(TEMPLATE)]
        )


@dataclass
class Outcome:
    """What each step of an armed cycle did: "ok" or the error's class and errno."""

    steps: dict[str, str] = field(default_factory=dict)
    acknowledged: bool = False  # the batch's ingest returned

    def run(self, name: str, call: Callable[[], Any]) -> bool:
        try:
            call()
        except StorageError as e:
            self.steps[name] = f"StorageError:{errno.errorcode.get(e.errno or 0, e.errno)}" + (
                ":reopen" if e.reopen else ""
            )
            return False
        except Exception as e:  # anything untyped is the failure this test looks for
            self.steps[name] = f"UNTYPED {type(e).__name__}: {e}"
            return False
        self.steps[name] = "ok"
        return True


def cycle(path: Path, b: int, retry: bool) -> Outcome:
    """Open, ingest batch ``b`` (once more if it failed and ``retry``), flush, close."""
    out = Outcome()
    box: dict[str, mmstore.Store] = {}
    if not out.run("open", lambda: box.setdefault("s", mmstore.open(path, plugins=[FakePlugin()]))):
        return out
    store = box["s"]
    col = store.collection("io")
    out.acknowledged = out.run("ingest", lambda: col.ingest(batch(b)))
    if not out.acknowledged and retry and "reopen" not in out.steps["ingest"]:
        out.acknowledged = out.run("ingest again", lambda: col.ingest(batch(b)))
    out.run("flush", col.flush)
    out.run("close", store.close)
    if not store.closed:
        store.close()
    return out


def untyped(out: Outcome) -> list[str]:
    return [f"{k}: {v}" for k, v in out.steps.items() if v.startswith("UNTYPED")]


def check_after(path: Path, b: int, out: Outcome) -> str:
    """With the fault lifted: the store is whole; return "there" or "absent" for the batch."""
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("io")
        for row in col.verify():
            assert row["ok"], f"index differs from the catalog after the fault: {row}"
        got = found(col, [r["id"] for r in batch(b)])
        new = [f"b{b}-{j}" for j in range(NEW)]
        present = [rid for rid in new if rid in got]
        assert present in ([], new), f"batch {b} half there: {present}"
        there = bool(present)
        assert there or not out.acknowledged, f"acknowledged batch {b} lost"
        for r in batch(b):
            if r["id"] in got:
                want = r["text"] if there else text(r["id"], 0)
                assert got[r["id"]]["text"] == want, f"{r['id']}: an update half applied"
        for r in batch(b)[:2] if there else []:
            assert store.media.get(got[r["id"]]["audio"]["media"]) == r["audio"]
            hits = col.search(text=r["text"], k=1)
            assert hits[0].id == r["id"], f"search by {r['id']}'s text missed it"
        leftovers = [p for p in path.rglob("*") if p.name.endswith((".mms-tmp", ".tmp"))]
        assert not leftovers, f"temporary files left: {leftovers}"
        col.ingest(batch(b + 1))  # space freed: ingest works again
        assert all(row["ok"] for row in col.verify())
    return "there" if there else "absent"


def found(col: mmstore.Collection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The records among ``ids`` that the store holds."""
    out = {}
    for rid in ids:
        with contextlib.suppress(NotFoundError):
            out[rid] = col.get(rid)[0]
    return out


# -- the in-process injector: every file operation mmstore does itself ----------------------
@dataclass
class Plan:
    at: int  # the index of the operation to fail (in the order of the dry run)
    number: int  # errno
    always: bool  # then fail every later operation of the same kind


class Faults:
    """Counts the file operations under ``root`` while armed and fails the planned one by
    raising the ``OSError`` the system call would: opening for writing, writing, fsync,
    rename, mkdir, unlink, copy, sync. Installed by :meth:`installed` (patched in ``os``,
    ``io`` and ``builtins``, so that every caller sees it)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root.resolve())
        self.armed = False
        self.ops: list[str] = []
        self.plan: Plan | None = None
        self.fired = 0

    def hit(self, op: str, path: Any) -> None:
        if not self.armed or (path is not None and not _under(path, self.root)):
            return
        n = len(self.ops)
        self.ops.append(f"{op} {_kind(path, self.root)}")
        plan = self.plan
        if plan is None:
            return
        first = self.ops[plan.at] if plan.at < len(self.ops) else None
        if n == plan.at or (plan.always and n > plan.at and self.ops[n] == first):
            self.fired += 1
            raise OSError(plan.number, os.strerror(plan.number), str(path or ""))

    @contextmanager
    def installed(self) -> Iterator[Faults]:
        saved = {
            (builtins, "open"): builtins.open,
            (io, "open"): io.open,
            (os, "fsync"): os.fsync,
            (os, "replace"): os.replace,
            (os, "mkdir"): os.mkdir,
            (os, "unlink"): os.unlink,
            (os, "sync"): os.sync,
            (os, "open"): os.open,
            (shutil, "copyfile"): shutil.copyfile,
        }
        real = dict(saved)
        me = self

        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            writing = any(c in mode for c in "wax+")
            if writing and isinstance(file, str | os.PathLike):
                me.hit("open", file)
            f = real[(builtins, "open")](file, mode, *args, **kwargs)
            return _FaultyFile(f, me, file) if writing else f

        def fsync(fd: int) -> None:
            me.hit("fsync", _fd_path(fd))
            real[(os, "fsync")](fd)

        def replace(src: Any, dst: Any, **kw: Any) -> None:
            me.hit("rename", dst)
            real[(os, "replace")](src, dst, **kw)

        def mkdir(p: Any, *args: Any, **kw: Any) -> None:
            me.hit("mkdir", p)
            real[(os, "mkdir")](p, *args, **kw)

        def unlink(p: Any, *args: Any, **kw: Any) -> None:
            me.hit("unlink", p)
            real[(os, "unlink")](p, *args, **kw)

        def sync() -> None:
            me.hit("sync", None)
            real[(os, "sync")]()

        def os_open(p: Any, flags: int, *args: Any, **kw: Any) -> int:
            me.hit("os.open", p)
            return real[(os, "open")](p, flags, *args, **kw)

        def copyfile(src: Any, dst: Any, **kw: Any) -> Any:
            me.hit("copy", dst)
            return real[(shutil, "copyfile")](src, dst, **kw)

        patched = {
            (builtins, "open"): open_,
            (io, "open"): open_,
            (os, "fsync"): fsync,
            (os, "replace"): replace,
            (os, "mkdir"): mkdir,
            (os, "unlink"): unlink,
            (os, "sync"): sync,
            (os, "open"): os_open,
            (shutil, "copyfile"): copyfile,
        }
        for (owner, name), fn in patched.items():
            setattr(owner, name, fn)
        try:
            yield self
        finally:
            for (owner, name), fn in saved.items():
                setattr(owner, name, fn)


class _FaultyFile:
    """A file opened for writing whose ``write`` is one counted operation."""

    def __init__(self, f: Any, faults: Faults, path: Any) -> None:
        self._f, self._faults, self._path = f, faults, path

    def write(self, data: Any) -> int:
        self._faults.hit("write", self._path)
        return int(self._f.write(data))

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _kind(path: Any, root: str) -> str:
    """Which file of the store an operation is on: media, indexes, heads, the commit mark."""
    if path is None:
        return "(all files)"
    rel = os.path.relpath(os.path.abspath(os.fspath(path)), root)
    first = rel.split(os.sep)[0]
    if first in ("media", "indexes", "heads"):
        return first
    return "commit mark" if "commits" in rel else ("store folder" if rel == "." else rel)


def sites(ops: list[str]) -> list[int]:
    """The positions to fail: the first and the last operation of each kind on each kind of
    file (a batch repeats the same operations for each blob)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, label in enumerate(ops):
        first.setdefault(label, i)
        last[label] = i
    return sorted(set(first.values()) | set(last.values()))


def _under(path: Any, root: str) -> bool:
    return os.path.abspath(os.fspath(path)).startswith(root)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
