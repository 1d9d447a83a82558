"""S6: with encryption on, 0 plaintext in the database file and its log.

Records carry marker strings in their ids, texts, labels and metadata, and marker vectors
(precomputed, inner-product field: stored as given). A child process creates the store,
ingests them and is killed, so the write-ahead log still holds the data; the database file
and its log (and a plain store's vector segment files; an encrypted store has none, its
vectors stay in the encrypted catalog) are then searched for every marker (UTF-8, UTF-16 LE and BE, and each vector's
float32 bytes): none with a key, many without one (the check bites). Reopened with the key
the data and search results are intact; after a checkpointing close the database file is
searched again. Missing, wrong and unexpected keys raise typed errors and change no byte.

DuckDB writes encrypted files only with its httpfs extension loaded (OpenSSL), from the
optional package duckdb-extension-httpfs (no mmstore extra: none resolves for DuckDB 2). Where no build of it
matches the installed DuckDB, the tests force DuckDB's built-in mbedtls crypto for writing
(``force_mbedtls_unsafe``: the same AES-GCM file format, but DuckDB does not trust its random
numbers, so the store itself never does this) and the test of the real extension is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import mmstore
from mmstore.storage import catalog
from mmstore.storage.catalog import ENCRYPTION_KEY_ENV
from mmstore.store import CATALOG_FILE
from mmstore.testing import FakePlugin, stored_vectors
from tests.reliability.figures import record

ROOT = Path(__file__).resolve().parents[2]
KEY = "s6 correct horse battery staple"
N = 40  # records
DIM = 8
FIELDS = {
    "text": {"encoder": "hash_text", "dim": 64},
    "emb": {"encoder": "precomputed", "modality": "vector", "dim": DIM, "metric": "ip"},
}
MARKERS = {  # one per kind of value; every record's value contains its kind's marker
    "id": "s6id-Qz8vX",
    "text": "S6TEXT-kW3pL",
    "label": "s6label-Hd5r",
    "meta": "S6META-yN2b",
}


def _extension_missing() -> str | None:
    try:
        catalog.crypto_extension()
    except mmstore.EncryptionUnavailableError as e:
        return str(e)
    return None


MISSING = _extension_missing()
CRYPTO = "httpfs (OpenSSL)" if MISSING is None else "built-in mbedtls, forced for the test"


def force_mbedtls(raw: Any) -> None:
    """Stand-in for :func:`mmstore.storage.catalog.load_crypto` where httpfs is missing."""
    raw.execute("SET force_mbedtls_unsafe = true")


@pytest.fixture
def crypto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Writable encryption for the test (the real extension when installed); no key from
    the environment unless a test sets one."""
    monkeypatch.delenv(ENCRYPTION_KEY_ENV, raising=False)
    if MISSING is not None:
        monkeypatch.setattr(catalog, "load_crypto", force_mbedtls)
    yield CRYPTO


def vector(i: int) -> np.ndarray:
    """A distinctive float32 vector per record (stored as given: the field is ``ip``)."""
    return np.array([1000.0 + i + j / 8 + 0.0123 for j in range(DIM)], np.float32)


def records() -> list[dict[str, Any]]:
    return [
        {
            "id": f"{MARKERS['id']}-{i}",
            "text": f"{MARKERS['text']} number {i} of the secret notes",
            "label": f"{MARKERS['label']}-{i % 3}",
            "meta": {"note": f"{MARKERS['meta']} {i}", "n": i},
            "emb": vector(i).tolist(),
        }
        for i in range(N)
    ]


def patterns() -> dict[str, bytes]:
    """Every byte string that must not appear in an encrypted file."""
    out = {}
    for kind, marker in MARKERS.items():
        for codec in ("utf-8", "utf-16-le", "utf-16-be"):
            out[f"{kind} {codec}"] = marker.encode(codec)
    for i in range(N):
        out[f"vector {i}"] = vector(i).tobytes()
    return out


def hits(files: list[Path]) -> dict[str, int]:
    """Occurrences of each pattern over ``files``."""
    data = [f.read_bytes() for f in files]
    return {name: sum(d.count(p) for d in data) for name, p in patterns().items()}


def ingest_and_die(path: str, key: str | None, force: bool) -> None:
    """The child: create the store, ingest the records, and die without closing (no
    checkpoint: the write-ahead log keeps the data)."""
    if force:
        catalog.load_crypto = force_mbedtls
    store = mmstore.open(path, encryption_key=key, plugins=[FakePlugin()])
    store.create_collection("secrets", FIELDS).ingest(records())
    os.kill(os.getpid(), signal.SIGKILL)


def run_child(path: Path, key: str | None) -> None:
    args = repr((str(path), key, MISSING is not None))
    code = f"from tests.reliability.test_s6_encryption import ingest_and_die as f; f(*{args})"
    env = {k: v for k, v in os.environ.items() if k != ENCRYPTION_KEY_ENV}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=120)
    assert done.returncode == -signal.SIGKILL, done


def catalog_files(path: Path) -> list[Path]:
    """The database file and its log (not ``.commits``, a count of commits, no data)."""
    return sorted(
        p
        for p in path.iterdir()
        if p.name.startswith(CATALOG_FILE) and not p.name.endswith(".commits")
    )


def check_intact(path: Path, key: str | None, **kw: Any) -> None:
    """Every record, vector and search result is there as ingested."""
    with mmstore.open(path, encryption_key=key, plugins=[FakePlugin()], **kw) as store:
        col = store.collection("secrets")
        want = records()
        got = col.get([r["id"] for r in want])
        assert [(g["text"], g["label"], g["meta"]) for g in got] == [
            (r["text"], r["label"], r["meta"]) for r in want
        ]
        rows = [r for r in stored_vectors(col) if r["field"] == "emb"]
        assert {r["record_id"]: r["vector"].tobytes() for r in rows} == {
            r["id"]: vector(i).tobytes() for i, r in enumerate(want)
        }
        for i in (0, N // 2, N - 1):
            assert col.search(text=want[i]["text"], k=1).ids == [want[i]["id"]]
        assert col.search(vector=vector(N - 1), target="emb", k=1).ids == [want[-1]["id"]]


def snapshot(path: Path) -> dict[str, str]:
    """A digest of every file under the store."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def encrypted_store(path: Path) -> Path:
    with mmstore.open(path, encryption_key=KEY, plugins=[FakePlugin()]) as store:
        store.create_collection("secrets", FIELDS).ingest(records())
    return path


def test_encrypted_catalog_and_log_hold_no_plaintext(tmp_path: Path, crypto: str) -> None:
    found = {}
    for name, key in (("encrypted", KEY), ("plain", None)):
        path = tmp_path / name
        run_child(path, key)
        files = catalog_files(path)
        assert [f.name for f in files] == [CATALOG_FILE, f"{CATALOG_FILE}.wal"], files
        assert (path / f"{CATALOG_FILE}.wal").stat().st_size > 20_000  # the log holds data
        segments = sorted((path / "vectors").rglob("*.f32"))  # a plain store's vectors
        found[name] = hits(files + segments)
        check_intact(path, key)  # replays the log, then checkpoints on close
        assert catalog_files(path) == [path / CATALOG_FILE]
        found[f"{name} checkpointed"] = hits([path / CATALOG_FILE, *segments])
        found[f"{name} indexes"] = hits([p for p in (path / "indexes").rglob("*") if p.is_file()])
        assert (path / "vectors").is_dir() == (key is None)  # encrypted: vectors stay in it
    enc = sum(found["encrypted"].values()) + sum(found["encrypted checkpointed"].values())
    assert enc == 0, {k: v for k, v in found["encrypted"].items() if v}
    plain = sum(found["plain"].values())
    stored_as = [k for k in patterns() if "utf-16" not in k]  # DuckDB keeps UTF-8
    assert all(found["plain"][k] for k in stored_as), found["plain"]  # the check bites
    assert sum(found["plain checkpointed"].values()) > 0
    index_vectors = sum(v for k, v in found["encrypted indexes"].items() if k.startswith("vector"))
    assert index_vectors >= N  # not encrypted, as docs/encryption.md says
    record(
        "S6",
        "test_encrypted_catalog_and_log_hold_no_plaintext",
        f"0 plaintext hits over {len(patterns())} patterns (markers in ids, texts, labels and "
        f"metadata as UTF-8, UTF-16 LE and BE; {N} float32 vectors) in the database file and "
        f"its write-ahead log ({N} records, child killed after ingest) and in the file after "
        f"a checkpointing reopen; without encryption {plain} hits in file and log, every "
        f"UTF-8 marker and vector found ({sum(found['plain checkpointed'].values())} after "
        f"checkpoint); reopened with the key: data and searches intact; the index files "
        f"hold the vectors in plain ({index_vectors} hits, documented); crypto: {crypto}",
    )


def open_error(path: Path, key: str | None, **kw: Any) -> tuple[mmstore.EncryptionKeyError, float]:
    started = time.perf_counter()
    with pytest.raises(mmstore.EncryptionKeyError) as info:
        mmstore.open(path, encryption_key=key, plugins=[FakePlugin()], **kw)
    return info.value, time.perf_counter() - started


def test_missing_or_wrong_key_raises_a_typed_error_and_changes_nothing(
    tmp_path: Path, crypto: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = encrypted_store(tmp_path / "s")
    before = snapshot(path)
    cases = {
        "missing": (None, {}),
        "wrong": ("not the key", {}),
        "missing read-only": (None, {"read_only": True}),
        "wrong read-only": ("not the key", {"read_only": True}),
    }
    slowest = 0.0
    for case, (key, kw) in cases.items():
        err, seconds = open_error(path, key, **kw)
        slowest = max(slowest, seconds)
        assert err.problem == case.split()[0] and err.http_status == 403
        assert isinstance(err, PermissionError) and str(path) in str(err)
        assert "encryption_key=" in str(err) and ENCRYPTION_KEY_ENV in str(err)
        assert KEY not in f"{err} {err!r} {err.__cause__}", case
        assert snapshot(path) == before, case
    assert slowest < 5, slowest
    assert KEY not in caplog.text
    check_intact(path, KEY)
    record(
        "S6",
        "test_missing_or_wrong_key_raises_a_typed_error_and_changes_nothing",
        f"missing and wrong keys, read-write and read-only: EncryptionKeyError (403) 4 of 4, "
        f"slowest {slowest:.2f} s, every file byte-identical after, the key in no message or "
        f"log; reopened with the key, data and searches intact",
    )


def test_key_on_a_plaintext_store_raises_a_typed_error(
    tmp_path: Path, crypto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "plain"
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        store.create_collection("secrets", FIELDS).ingest(records())
    before = snapshot(path)
    err, _ = open_error(path, KEY)
    assert err.problem == "unexpected" and KEY not in f"{err} {err!r} {err.__cause__}"
    monkeypatch.setenv(ENCRYPTION_KEY_ENV, KEY)
    assert open_error(path, None, read_only=True)[0].problem == "unexpected"
    monkeypatch.delenv(ENCRYPTION_KEY_ENV)
    assert snapshot(path) == before
    check_intact(path, None)


def test_argument_key_wins_over_the_environment(
    tmp_path: Path, crypto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENCRYPTION_KEY_ENV, KEY)
    path = tmp_path / "s"
    with mmstore.open(path, plugins=[FakePlugin()]) as store:  # created with the env key
        assert store.catalog.encrypted and "encrypted" in repr(store) and KEY not in repr(store)
        store.create_collection("secrets", FIELDS).ingest(records())
    monkeypatch.setenv(ENCRYPTION_KEY_ENV, "not the key")
    check_intact(path, KEY)  # the argument wins
    assert open_error(path, None)[0].problem == "wrong"  # the environment's key is used
    monkeypatch.delenv(ENCRYPTION_KEY_ENV)
    assert open_error(path, None)[0].problem == "missing"
    with pytest.raises(mmstore.ConfigError, match="non-empty"):
        mmstore.open(path, encryption_key="", plugins=[FakePlugin()])


def test_read_only_open_with_the_key_is_locked_down(tmp_path: Path, crypto: str) -> None:
    path = encrypted_store(tmp_path / "s")
    check_intact(path, KEY, read_only=True)
    with mmstore.open(path, encryption_key=KEY, read_only=True, plugins=[FakePlugin()]) as st:
        conn = st.catalog.conn
        settings = conn.exec_driver_sql(
            "SELECT current_setting('enable_external_access'), "
            "current_setting('lock_configuration')"
        ).one()
        assert tuple(settings) == (False, True)
        conn.rollback()
        with pytest.raises(sa.exc.DBAPIError, match="Cannot change configuration"):
            conn.exec_driver_sql("SET enable_external_access = true")
        conn.rollback()
        with pytest.raises(sa.exc.DBAPIError, match="read-only"):
            conn.exec_driver_sql("DELETE FROM mms_records")
        conn.rollback()
        with pytest.raises(mmstore.ReadOnlyError):
            st.collection("secrets").ingest(records()[:1])


@pytest.mark.parametrize("installed", ["none", "another DuckDB's build"])
def test_missing_extension_fails_fast_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: str
) -> None:
    monkeypatch.delenv(ENCRYPTION_KEY_ENV, raising=False)
    fake = None  # import fails
    if installed != "none":
        fake = types.ModuleType("duckdb_extension_httpfs")
        fake.__file__ = str(tmp_path / "pkg" / "__init__.py")
        (tmp_path / "pkg" / "extensions" / "v1.5.5").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "duckdb_extension_httpfs", fake)
    started = time.perf_counter()
    with pytest.raises(
        mmstore.EncryptionUnavailableError, match=r"pip install duckdb-extension-httpfs=="
    ) as e:
        mmstore.open(tmp_path / "s", encryption_key=KEY, plugins=[FakePlugin()])
    assert time.perf_counter() - started < 5
    assert isinstance(e.value, ImportError) and KEY not in str(e.value)
    assert installed == "none" or "v1.5.5" in str(e.value)
    assert not (tmp_path / "s" / CATALOG_FILE).exists()


@pytest.mark.skipif(MISSING is not None, reason=f"no usable httpfs extension: {MISSING}")
def test_encrypted_store_writes_with_the_installed_httpfs_extension(tmp_path: Path) -> None:
    path = encrypted_store(tmp_path / "s")
    with mmstore.open(path, encryption_key=KEY, plugins=[FakePlugin()]) as store:
        loaded = store.catalog.conn.exec_driver_sql(
            "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
        ).scalar_one()
        assert loaded
    assert sum(hits(catalog_files(path)).values()) == 0
    check_intact(path, KEY)


def spill(raw: Any, folder: Path) -> tuple[int, int]:
    """Run a grouping larger than memory over marker strings; count the temporary files
    seen in ``folder`` meanwhile and the markers in them."""
    raw.execute("SET memory_limit = '40MB'")
    raw.execute("SET threads = 1")
    seen, stop = {"files": 0, "hits": 0}, threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            for f in folder.glob("*") if folder.is_dir() else ():
                with contextlib.suppress(OSError):
                    seen["hits"] += f.read_bytes().count(MARKERS["text"].encode())
                    seen["files"] += 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        raw.sql(
            f"SELECT count(*) FROM (SELECT s, count(*) FROM (SELECT '{MARKERS['text']}' || "
            "i::VARCHAR || repeat('z', 60) AS s FROM range(1500000) r(i)) GROUP BY s)"
        ).fetchall()
    finally:
        stop.set()
        watcher.join()
    return seen["files"], seen["hits"]


def test_spilled_temporary_files_are_encrypted(tmp_path: Path, crypto: str) -> None:
    """DuckDB spills to ``catalog.duckdb.tmp`` beside the file, encrypted; the same spill
    with DuckDB's default (``temp_file_encryption`` off) holds the markers in plain."""
    path = tmp_path / CATALOG_FILE
    cat = catalog.Catalog(path, encryption_key=KEY)
    try:
        files, found = spill(cat.raw, Path(f"{path}.tmp"))
        cat.raw.execute("SET temp_file_encryption = false")
        plain_files, plain_found = spill(cat.raw, Path(f"{path}.tmp"))
    finally:
        cat.close()
    assert files > 0 and found == 0, (files, found)
    assert plain_files > 0 and plain_found > 0, (plain_files, plain_found)
