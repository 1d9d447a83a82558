"""R8: I/O errors and a full disk injected at each file operation give typed errors
(:class:`mmstore.StorageError`), never a corrupt store, and ingest works again once space
is freed.

Four ways in, each on the same cycle (:mod:`tests.reliability.faults`: open, ingest a batch
of records with text and audio whose bytes go to the media store, flush the indexes,
close):

1. mmstore's own file operations, in process: every operation of the cycle is counted
   (open for writing, write, fsync, rename, mkdir, unlink, sync, copy), and the first and
   the last of each kind on each kind of file (media, index files, the commit mark, the
   store folder) fails with ENOSPC or EIO, once or from then on.
2. The system calls underneath, DuckDB's included: a preloaded shim (``syscalls.c``, built
   with the C compiler) fails the n-th ``write``/``pwrite``/``fsync``/``fdatasync`` on a
   store file in a child process, at four positions of each, once or from then on.
3. A real full disk: a 16 MB tmpfs filled up by ingest (needs root to mount; skipped
   otherwise), then space freed by removing a filler file.
4. A real file-size limit: ``RLIMIT_FSIZE`` in a child (SIGXFSZ ignored, so writes fail
   with EFBIG), then the limit raised.

After each: every error an API call raised is a StorageError (no other exception), the
store opens, the batch is all there or not at all (all there when ``ingest`` returned),
each index equals the catalog, a search by a record's text finds it, no temporary file is
left, and a new batch ingests.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest

import mmstore
from mmstore.testing import FakePlugin
from tests.reliability import faults
from tests.reliability.figures import record

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("r8") / "template"
    faults.make_template(path)
    return path


def fresh(template: Path, folder: Path, name: str) -> Path:
    path = folder / name
    shutil.copytree(template, path)
    return path


def test_storage_error_is_typed_and_says_what_to_do() -> None:
    e = mmstore.StorageError(errno.ENOSPC, "/s", "ingest into collection 'c'", "/s/x", False)
    assert isinstance(e, OSError) and isinstance(e, mmstore.MMStoreError)
    assert e.errno == errno.ENOSPC and e.http_status == 507
    assert "No space left on device" in str(e) and "free space and call it again" in str(e)
    again = mmstore.StorageError(errno.EIO, "/s", "ingest", "fsync failed!", True)
    assert "close the store and open it again" in str(again)


# -- 1. our own file operations -------------------------------------------------------------
def test_every_own_file_operation_failing(template: Path, tmp_path: Path) -> None:
    dry = fresh(template, tmp_path, "dry")
    counting = faults.Faults(dry)
    with counting.installed():
        counting.armed = True
        out = faults.cycle(dry, 1, retry=True)
    assert out.steps == {"open": "ok", "ingest": "ok", "flush": "ok", "close": "ok"}
    ops = counting.ops
    kinds = {label.split(" ", 1)[0] for label in ops}
    assert {"open", "write", "fsync", "rename", "mkdir", "sync", "os.open"} <= kinds, kinds
    outcomes: collections.Counter[str] = collections.Counter()
    scenarios = 0
    for at in faults.sites(ops):
        for number in (errno.ENOSPC, errno.EIO):
            for always in (False, True):
                path = fresh(template, tmp_path, f"s{at}-{number}-{always:d}")
                injector = faults.Faults(path)
                injector.plan = faults.Plan(at, number, always)
                with injector.installed():
                    injector.armed = True
                    out = faults.cycle(path, 1, retry=True)
                where = f"{ops[at]} (#{at}, {errno.errorcode[number]}, always={always})"
                assert injector.fired >= 1, f"{where}: the fault never fired"
                assert not faults.untyped(out), f"{where}: {faults.untyped(out)}"
                raised = [v for v in out.steps.values() if v != "ok"]
                assert all(errno.errorcode[number] in v for v in raised), (where, out.steps)
                batch = faults.check_after(path, 1, out)
                outcomes[f"{'raised' if raised else 'absorbed'}, batch {batch}"] += 1
                scenarios += 1
                shutil.rmtree(path)
    assert outcomes["raised, batch absent"] > 0 and outcomes["absorbed, batch there"] > 0
    labels = sorted(set(ops))
    record(
        "R8",
        "test_every_own_file_operation_failing",
        f"{scenarios} injected faults in mmstore's own file operations ({len(labels)} kinds of "
        f"operation on each kind of file, first and last of each, ENOSPC and EIO, once and "
        f"always): 0 untyped errors, 0 corrupt stores, the batch all there or not at all, "
        f"ingest works after ({dict(sorted(outcomes.items()))})",
    )


# -- 2. system calls, DuckDB's included ------------------------------------------------------
@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the system-call shim (tests/reliability/syscalls.c)")
    out = tmp_path_factory.mktemp("shim") / "syscalls.so"
    source = Path(__file__).with_name("syscalls.c")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(source), "-ldl"],
        check=True,
    )
    return out


def test_every_system_call_failing(template: Path, shim: Path, tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    env = os.environ | {"LD_PRELOAD": str(shim), "PYTHONPATH": str(ROOT)}
    child = [sys.executable, "-m", "tests.reliability.syscall_child"]
    args = [str(shim), str(template), str(tmp_path), str(result)]
    done = subprocess.run(child + args, env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    data = json.loads(result.read_text())
    counts = data["counts"]
    assert data["dry"] == {"open": "ok", "ingest": "ok", "flush": "ok", "close": "ok"}
    assert counts["write"] > 0 and counts["pwrite"] > 0 and counts["fdatasync"] > 0, counts
    rows = data["results"]
    for row in rows:
        where = f"{row['function']} #{row['nth']} {row['errno']} always={row['always']}"
        assert row["fired"] >= 1, f"{where}: the fault never fired"
        assert "check_failed" not in row, f"{where}: {row['check_failed']}"
        for step, what in row["steps"].items():
            assert what == "ok" or what.startswith(f"StorageError:{row['errno']}"), (where, step)
    reopen = sum(any(":reopen" in v for v in r["steps"].values()) for r in rows)
    raised = sum(any(v != "ok" for v in r["steps"].values()) for r in rows)
    assert reopen > 0, "a failed fdatasync of DuckDB's log should ask for a reopen"
    record(
        "R8",
        "test_every_system_call_failing",
        f"{len(rows)} injected system-call faults (write, pwrite, fsync, fdatasync on store "
        f"files, DuckDB's included; counted per cycle {counts}; ENOSPC and EIO, once and "
        f"always): {raised} raised StorageError ({reopen} of them asking for a reopen after "
        f"DuckDB gave up on a failed sync), the rest absorbed (checkpoint or index save "
        f"retried later); 0 untyped errors, 0 corrupt stores, ingest works after",
    )


# -- 3. a real full disk ---------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_until_refused(path: Path, first: int) -> tuple[list[int], mmstore.StorageError, int]:
    """Ingest batches until the disk refuses one; return the acknowledged batches, the
    error, and the batch refused."""
    acked: list[int] = []
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("io")
        for b in range(first, first + 400):
            before = col.count()
            try:
                col.ingest(faults.batch(b))
            except mmstore.StorageError as e:
                assert col.count() == before, "a refused ingest changed the count"
                with pytest.raises(mmstore.StorageError):  # still full: refused again
                    col.ingest(faults.batch(b))
                return acked, e, b
            acked.append(b)
    raise AssertionError("the disk never filled up")


def check_batches(path: Path, acked: list[int], extra: int) -> int:
    """Every acknowledged batch (and ``extra``) is there, each index equals the catalog."""
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("io")
        assert all(row["ok"] for row in col.verify())
        for b in [*acked, extra]:
            ids = [r["id"] for r in faults.batch(b)[: faults.NEW]]
            assert len(faults.found(col, ids)) == faults.NEW, f"batch {b} lost"
        hit = col.search(text=faults.batch(extra)[0]["text"], k=1)
        assert hit[0].id == faults.batch(extra)[0]["id"]
        return col.count()


def test_real_full_disk(template: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "16m") as disk:
        path = fresh(template, disk, "s")
        filler = disk / "filler"
        free = shutil.disk_usage(disk).free
        filler.write_bytes(b"\0" * max(0, free - 700_000))
        acked, error, refused = fill_until_refused(path, 1)
        assert error.errno in (errno.ENOSPC, errno.EFBIG), error
        filler.unlink()  # space freed
        with mmstore.open(path, plugins=[FakePlugin()]) as store:
            store.collection("io").ingest(faults.batch(refused))
        count = check_batches(path, acked, refused)
    record(
        "R8",
        "test_real_full_disk",
        f"a 16 MB tmpfs filled by ingest: {len(acked)} batches acknowledged, then StorageError "
        f"({errno.errorcode[error.errno or 0]}) with the count unchanged and again on retry; "
        f"after freeing space the refused batch ingested, reopen verified ({count} records, "
        f"0 lost)",
    )


# -- 4. a real file-size limit ---------------------------------------------------------------
def limited(path: str, limit: int, out: Connection) -> None:
    """In a child: cap file sizes at ``limit`` bytes (EFBIG, not SIGXFSZ), ingest until
    refused, lift the cap, ingest the refused batch, close."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        acked, error, refused = fill_until_refused(Path(path), 1)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # "space freed"
        with mmstore.open(path, plugins=[FakePlugin()]) as store:
            store.collection("io").ingest(faults.batch(refused))
        out.send((acked, errno.errorcode.get(error.errno or 0), refused, str(error)))
    except BaseException as e:
        out.send(("failed", type(e).__name__, str(e), ""))


def test_file_size_limit(forkserver: ForkServerContext, template: Path, tmp_path: Path) -> None:
    path = fresh(template, tmp_path, "s")
    receive, send = forkserver.Pipe(duplex=False)
    child = forkserver.Process(target=limited, args=(str(path), 400_000, send))
    child.start()
    send.close()
    answer: Any = receive.recv() if receive.poll(120) else ("failed", "timeout", "", "")
    child.join(timeout=60)
    assert answer[0] != "failed", answer
    acked, name, refused, message = answer
    assert name == "EFBIG", message
    count = check_batches(path, acked, refused)
    record(
        "R8",
        "test_file_size_limit",
        f"RLIMIT_FSIZE 400 kB in a child: {len(acked)} batches acknowledged, then StorageError "
        f"(EFBIG), refused again on retry; with the limit lifted the refused batch ingested, "
        f"reopen verified ({count} records, 0 lost)",
    )


# -- over HTTP -------------------------------------------------------------------------------
def test_http_answers_507_and_works_after(template: Path, tmp_path: Path) -> None:
    import httpx

    from mmstore.service import Settings
    from mmstore.service.app import create_app
    from tests.servers import running

    path = fresh(template, tmp_path, "s")
    store = mmstore.open(path, plugins=[FakePlugin()])
    audio = {"$base64": base64.b64encode(faults.wav(999)).decode()}
    body = {"records": [{"id": "h1", "text": "sent while the disk is full", "audio": audio}]}
    injector = faults.Faults(path)
    injector.plan = faults.Plan(0, errno.ENOSPC, always=True)
    try:
        with (
            running(create_app(store, Settings(auth=False))) as url,
            httpx.Client(base_url=url, timeout=60) as http,
        ):
            with injector.installed():
                injector.armed = True
                full = http.post("/collections/io/records", json=body)
            assert full.status_code == 507, (full.text, injector.ops)
            assert full.json()["error"] == "StorageError" and "free space" in full.json()["message"]
            assert http.get("/collections/io/records/h1").status_code == 404
            freed = http.post("/collections/io/records", json=body)
            assert freed.status_code == 200 and freed.json()["written"] == 1, freed.text
    finally:
        store.close()
    record(
        "R8",
        "test_http_answers_507_and_works_after",
        f"HTTP ingest with the disk full ({injector.ops[0]} refused): 507 StorageError "
        "naming what to do, nothing written; the same request after: 200",
    )
