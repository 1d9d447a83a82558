"""Vector segment files: vectors are appended to one file per space beside the catalog and
committed with their rows. Bytes a rolled-back or killed write left are cut off, a file
that is short, missing or flipped is refused with :class:`mmstore.DamagedVectorsError`
(naming the rows of the damaged block) before any vector is used, and ``optimize``
rewrites a segment without its deleted rows into the next generation of the file.

Bad inputs tried: a transaction rolled back after its bytes were written, a process killed
between the file's fsync and the commit, tail bytes appended by hand, a file cut short, a
missing file, one flipped byte, a checksum list that does not match the file, a compaction
rolled back, and a compaction whose old file survived its commit."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmstore
from mmstore.storage import segments
from mmstore.testing import FakePlugin, stored_vectors

DIM = 8
SPEC = {"emb": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 32 rows (1 KiB at 8 dimensions), so that a few hundred vectors span
    several blocks."""
    monkeypatch.setattr(segments, "BLOCK_BYTES", 32 * DIM * 4)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def records(v: np.ndarray, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"r{start + i}", "emb": row} for i, row in enumerate(v)]


def make(path: Path, n: int = 200) -> np.ndarray:
    """A store of ``n`` vectors; returns them as stored (normalized), read back."""
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        store.create_collection("c", SPEC).ingest(records(vectors(n)))
    got = read_back(path)
    return np.stack([got[f"r{i}"] for i in range(n)])


def failing(message: str) -> Any:
    """A stand-in that raises ``OSError(message)``, for a step that must fail."""

    def fail(*args: Any, **kw: Any) -> None:
        raise OSError(message)

    return fail


def segment_file(path: Path) -> Path:
    (found,) = (path / "vectors" / "c").glob("*.f32")
    return found


def read_back(path: Path) -> dict[str, np.ndarray]:
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        return {r["record_id"]: r["vector"] for r in stored_vectors(store.collection("c"))}


def assert_intact(path: Path, v: np.ndarray) -> None:
    """The store holds exactly the vectors ``v`` as records ``r0..``, bit for bit."""
    got = read_back(path)
    assert len(got) == len(v)
    for i, row in enumerate(v):
        np.testing.assert_array_equal(got[f"r{i}"], row)


def test_vectors_live_in_one_file_and_not_in_the_catalog(tmp_path: Path) -> None:
    v = make(tmp_path / "s")
    seg = segment_file(tmp_path / "s")
    assert seg.name.endswith(".0.f32") and seg.stat().st_size == 200 * DIM * 4
    assert np.array_equal(np.fromfile(seg, np.float32).reshape(-1, DIM), v)
    normalized = vectors(200) / np.linalg.norm(vectors(200), axis=1, keepdims=True)
    np.testing.assert_allclose(v, normalized, rtol=1e-6)
    with mmstore.open(tmp_path / "s", plugins=[FakePlugin()]) as store:
        counts = store.catalog.query_arrow(
            "SELECT count(vector) AS blobs, count(pos) AS positions FROM mms_embeddings", []
        ).to_pylist()[0]
        (hit,) = store.collection("c").search(vector=v[17], target="emb", k=1)
    assert counts == {"blobs": 0, "positions": 200}
    assert hit.id == "r17"
    assert_intact(tmp_path / "s", v)


def test_a_rolled_back_write_leaves_bytes_the_next_write_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s"
    v = make(path)
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        with monkeypatch.context() as patch:
            patch.setattr(segments.SegmentFiles, "_put", failing("the commit failed"))
            with pytest.raises(Exception, match="the commit failed"):
                store.collection("c").ingest(records(vectors(50, seed=1), start=1000))
        assert segment_file(path).stat().st_size == 250 * DIM * 4  # the bytes are there
        store.collection("c").ingest(records(vectors(10, seed=2), start=200))
    assert segment_file(path).stat().st_size == 210 * DIM * 4
    got = read_back(path)
    assert len(got) == 210 and "r1000" not in got
    for i, row in enumerate(v):
        np.testing.assert_array_equal(got[f"r{i}"], row)


KILLED = """
import os, signal, sys
import numpy as np
import mmstore
from mmstore.storage import segments
from mmstore.testing import FakePlugin
segments.BLOCK_BYTES = 32 * 8 * 4
real = os.fsync
def fsync_then_die(fd):
    real(fd)
    os.kill(os.getpid(), signal.SIGKILL)
store = mmstore.open(sys.argv[1], plugins=[FakePlugin()])
v = np.random.default_rng(9).normal(size=(70, 8)).astype(np.float32)
segments.os.fsync = fsync_then_die  # the segment's bytes are on disk, its rows are not
store.collection("c").ingest([{"id": f"k{i}", "emb": row} for i, row in enumerate(v)])
"""


def test_a_kill_between_the_file_sync_and_the_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s"
    v = make(path)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    assert segment_file(path).stat().st_size == 270 * DIM * 4
    caplog.set_level(logging.WARNING)
    assert_intact(path, v)  # the 70 uncommitted vectors are gone, the 200 read back
    assert segment_file(path).stat().st_size == 200 * DIM * 4
    assert "cut 2240 uncommitted bytes" in caplog.text


def test_tail_bytes_are_cut_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s"
    v = make(path)
    with open(segment_file(path), "ab") as f:
        f.write(b"\x01" * 100)
    caplog.set_level(logging.WARNING)
    assert_intact(path, v)
    assert segment_file(path).stat().st_size == 200 * DIM * 4
    assert "cut 100 uncommitted bytes" in caplog.text


def damaged(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """The error reading every vector gives, and what ``verify`` reports."""
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("c")
        with pytest.raises(mmstore.DamagedVectorsError) as info:
            stored_vectors(col)
        return str(info.value), col.verify()


def test_a_short_or_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make(path)
    seg = segment_file(path)
    os.truncate(seg, 150 * DIM * 4)
    message, report = damaged(path)
    assert "4800 bytes" in message and "200 vectors" in message, message
    assert report[0]["vectors"].startswith("damaged: segment file"), report
    seg.unlink()
    message, report = damaged(path)
    assert "is missing" in message, message
    assert report[0]["vectors"].startswith("damaged"), report


def test_a_flipped_byte_names_its_block_and_other_blocks_still_read(tmp_path: Path) -> None:
    path = tmp_path / "s"
    v = make(path)
    seg = segment_file(path)
    data = bytearray(seg.read_bytes())
    data[70 * DIM * 4 + 5] ^= 0x10  # row 70: block 2, rows 64-95
    seg.write_bytes(bytes(data))
    message, report = damaged(path)
    assert "block 2" in message and "rows 64-95" in message, message
    assert "does not match its checksum" in report[0]["vectors"], report
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("c")
        (hit,) = col.search(vector=v[10], target="emb", k=1)  # the index holds its own copy
        assert hit.id == "r10"
        files = store.catalog.segments
        with store.catalog.reading() as conn:
            (seg,) = files.of_collection(conn, "c")
        np.testing.assert_array_equal(files.read(seg, np.arange(0, 64)), v[:64])
        np.testing.assert_array_equal(files.read(seg, np.array([3, 150, 199])), v[[3, 150, 199]])
        with pytest.raises(mmstore.DamagedVectorsError, match="rows 64-95"):
            files.read(seg, np.array([3, 70]))
    shutil.rmtree(path / "indexes")
    with (
        mmstore.open(path, plugins=[FakePlugin()]) as store,
        pytest.raises(mmstore.DamagedVectorsError, match="rows 64-95"),
    ):
        store.collection("c").search(vector=v[10], target="emb", k=1)  # no rebuild from it


def test_a_checksum_list_that_does_not_fit_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make(path)
    with (
        mmstore.open(path, plugins=[FakePlugin()]) as store,
        store.catalog.transaction("test") as conn,
    ):
        (crcs,) = conn.exec_driver_sql("SELECT crcs FROM mms_segments").one()
        conn.exec_driver_sql("UPDATE mms_segments SET crcs = ?", (crcs[4:],))
    message, report = damaged(path)
    assert "6 checksums for the 7 blocks" in message, message
    assert report[0]["vectors"].startswith("damaged"), report


def test_the_index_is_rebuilt_from_the_segment(tmp_path: Path) -> None:
    path = tmp_path / "s"
    v = make(path)
    shutil.rmtree(path / "indexes")
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("c")
        assert col.verify()[0]["vectors"] == "ok"
        (hit,) = col.search(vector=v[123], target="emb", k=1)
    assert hit.id == "r123"


def delete_30_percent(path: Path) -> list[str]:
    gone = [f"r{i}" for i in range(0, 200, 3)]  # 67 of 200
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        store.collection("c").delete(gone)
    return gone


def test_optimize_compacts_deleted_rows_into_the_next_generation(tmp_path: Path) -> None:
    path = tmp_path / "s"
    v = make(path)
    delete_30_percent(path)
    assert segment_file(path).stat().st_size == 200 * DIM * 4  # deletes leave the bytes
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("c")
        col.optimize()
        (hit,) = col.search(vector=v[124], target="emb", k=1)
        assert hit.id == "r124"
        assert col.verify()[0]["vectors"] == "ok"
    seg = segment_file(path)
    assert seg.name.endswith(".1.f32") and seg.stat().st_size == 133 * DIM * 4
    kept = [i for i in range(200) if i % 3]
    got = read_back(path)
    assert sorted(got) == sorted(f"r{i}" for i in kept)
    for i in kept:
        np.testing.assert_array_equal(got[f"r{i}"], v[i])
    with mmstore.open(path, plugins=[FakePlugin()]) as store:  # appends go on after it
        store.collection("c").ingest(records(vectors(5, seed=3), start=500))
    assert segment_file(path).stat().st_size == 138 * DIM * 4


def test_a_few_deletes_leave_the_file_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make(path)
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        store.collection("c").delete(["r1", "r2"])
        store.collection("c").optimize()
    assert segment_file(path).name.endswith(".0.f32")


def test_an_interrupted_compaction_keeps_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s"
    v = make(path)
    delete_30_percent(path)
    kept = v[[i for i in range(200) if i % 3]]
    with mmstore.open(path, plugins=[FakePlugin()]) as store, monkeypatch.context() as patch:
        # the new generation's row is not recorded: its file is written, nothing commits
        patch.setattr(segments.SegmentFiles, "_put", failing("killed before the commit"))
        with pytest.raises(OSError, match="before the commit"):
            store.collection("c").optimize()
    names = sorted(p.name for p in (path / "vectors" / "c").glob("*.f32"))
    assert [n[-6:] for n in names] == [".0.f32", ".1.f32"]
    caplog.set_level(logging.WARNING)
    got = read_back(path)  # the open removes the new file nobody names
    assert "removed (no catalog row names it)" in caplog.text
    assert segment_file(path).name.endswith(".0.f32") and len(got) == 133

    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        old = segment_file(path).read_bytes()
        store.collection("c").optimize()
    (path / "vectors" / "c" / segment_file(path).name.replace(".1.", ".0.")).write_bytes(old)
    caplog.clear()
    got = read_back(path)  # committed, the old file not yet removed: it goes on open
    assert "removed (no catalog row names it)" in caplog.text
    assert segment_file(path).name.endswith(".1.f32")
    for i, row in zip([i for i in range(200) if i % 3], kept, strict=True):
        np.testing.assert_array_equal(got[f"r{i}"], row)


def test_dropping_a_collection_removes_its_segments(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make(path)
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        store.drop_collection("c")
        (n,) = store.catalog.query_arrow("SELECT count(*) AS n FROM mms_segments", [])["n"]
    assert n.as_py() == 0
    assert not (path / "vectors" / "c").exists()
