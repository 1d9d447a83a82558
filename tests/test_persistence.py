"""Persistence: the catalog is the truth and index files are a cache of it. Reopen gives
the same hits; an index killed before it was saved catches up; a missing or damaged index
file is rebuilt, never trusted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import mmstore
from mmstore.storage import schema
from mmstore.testing import FakePlugin

from .conftest import make_records

QUERIES = ["apple banana", "red green", "small fresh plum", "black white lemon"]


def snapshot(col: mmstore.Collection, where: Any = None) -> list[Any]:
    """Hits per query as (score, ids with that score) groups; the last group is cut by k,
    so which of its tied ids made the cut is arbitrary: only its score is kept."""
    out = []
    for q in QUERIES:
        groups: dict[float, set[str]] = {}
        for h in col.search(text=q, k=10, where=where):
            groups.setdefault(round(h.score, 5), set()).add(h.id)
        scores = sorted(groups, reverse=True)
        out.append([(s, groups[s]) for s in scores[:-1]] + [(scores[-1], None)])
    return out


def open_store(path: Path, **kw: Any) -> mmstore.Store:
    return mmstore.open(path, plugins=[FakePlugin(), *kw.pop("plugins", [])], **kw)


def index_files(path: Path) -> list[Path]:
    return sorted((path / "indexes").rglob("*.mmi"))


def test_reopen_gives_the_same_hits(store_path: Path) -> None:
    with open_store(store_path) as store:
        col = store.create_collection("docs", encoders={"text": "hash_text"})
        col.ingest(make_records(300))
        before = snapshot(col), snapshot(col, {"brand": "zeta"})
    assert len(index_files(store_path)) == 1
    with open_store(store_path) as store:
        col = store.collection("docs")
        assert (snapshot(col), snapshot(col, {"brand": "zeta"})) == before


def test_updates_and_deletes_survive_reopen(store_path: Path) -> None:
    with open_store(store_path) as store:
        col = store.create_collection("docs", encoders={"text": "hash_text"})
        col.ingest(make_records(50))
        col.ingest([{"id": "r1", "text": "quantum chromodynamics"}])
        col.delete(["r2"])
    with open_store(store_path) as store:
        col = store.collection("docs")
        assert col.search(text="quantum chromodynamics", k=1).ids == ["r1"]
        assert "r2" not in {h.id for q in QUERIES for h in col.search(text=q, k=50)}
        assert len(col) == 49


def test_changes_after_the_last_save_are_caught_up_on_reopen(store_path: Path) -> None:
    """Close saves the index; later writes reach only the catalog (the index object is
    dropped unsaved), and the next open replays them."""
    with open_store(store_path) as store:
        col = store.create_collection("docs", encoders={"text": "hash_text"})
        col.ingest(make_records(100))
    with open_store(store_path) as store:
        col = store.collection("docs")
        col.search(text="x")  # load the index
        col.ingest(make_records(20, start=100))
        col.ingest([{"id": "r5", "text": "entirely new words"}])
        col.delete(["r6"])
        expected = snapshot(col)
        col.indexes._entries.clear()  # as if the process died before saving
        store.closed = True
        store.catalog.close()
    with open_store(store_path) as store:
        col = store.collection("docs")
        assert snapshot(col) == expected
        assert col.search(text="entirely new words", k=1).ids == ["r5"]


CHILD = textwrap.dedent("""
    import os, signal, sys
    import mmstore
    from mmstore.plugin.events import IngestCommitted
    from mmstore.testing import FakePlugin

    class KillAfterCommit:
        @mmstore.hookimpl
        def mmstore_track_event(self, event):
            if isinstance(event, IngestCommitted) and event.run_id == 2:
                print("committed", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    store = mmstore.open(sys.argv[1], plugins=[FakePlugin(), KillAfterCommit()])
    col = store.collection("docs")
    col.search(text="apple")
    col.ingest([{"id": f"new{i}", "text": f"zebra giraffe {i}"} for i in range(30)])
    print("not killed", flush=True)
""")


def test_kill_between_catalog_commit_and_index_save(store_path: Path) -> None:
    with open_store(store_path) as store:
        store.create_collection("docs", encoders={"text": "hash_text"}).ingest(make_records(80))
    saved = {p: p.read_bytes() for p in index_files(store_path)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(store_path)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.strip() == "committed"
    assert {p: p.read_bytes() for p in index_files(store_path)} == saved  # never saved
    with open_store(store_path) as store:
        col = store.collection("docs")
        assert len(col) == 110
        hits = col.search(text="zebra giraffe", k=30)
        assert {h.id for h in hits} == {f"new{i}" for i in range(30)}
        assert set(col.indexes.get(col.fields["text"]).live_vids().tolist()) == set(
            col.indexes.live_vids(col.fields["text"]).tolist()
        )


def test_hnsw_store_round_trip(store_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    with open_store(store_path) as store:
        col = store.create_collection(
            "v",
            encoders={"e": {"encoder": "precomputed", "modality": "vector", "dim": 16}},
            index={"ann_threshold": 1000},
        )
        col.ingest([{"id": str(i), "e": v, "label": str(i % 4)} for i, v in enumerate(vectors)])
        col.optimize()
        info = col.info()["fields"][0]["index"]
        assert info["kind"] == "hnsw" and info["tuned_recall@10"] >= 0.95
        before = [col.search(vector=v, k=10).ids for v in vectors[:20]]
        filtered = [col.search(vector=v, k=10, where={"label": "1"}).ids for v in vectors[:5]]
    with mmstore.open(store_path) as store:
        with store.catalog.reading() as conn:
            row = conn.execute(sa.select(schema.indexes)).all()[0]
        assert row.kind == "hnsw" and json.loads(row.params)["efSearch"] >= 16
        col = store.collection("v")
        assert [col.search(vector=v, k=10).ids for v in vectors[:20]] == before
        assert [
            col.search(vector=v, k=10, where={"label": "1"}).ids for v in vectors[:5]
        ] == filtered


def test_stale_temporary_files_are_swept_on_open(store_path: Path) -> None:
    with open_store(store_path) as store:
        store.create_collection("docs", encoders={"text": "hash_text"}).ingest(make_records(5))
    stale = store_path / "indexes" / "docs" / f".text.mmi.{os.getpid()}.mms-tmp"
    stale.write_bytes(b"half a file")
    with open_store(store_path):
        assert not stale.exists()


def test_drop_collection_removes_rows_and_files(store_path: Path) -> None:
    with open_store(store_path) as store:
        store.create_collection("docs", encoders={"text": "hash_text"}).ingest(make_records(5))
    with open_store(store_path) as store:
        store.drop_collection("docs")
        assert store.collections() == []
        with store.catalog.reading() as conn:
            for table in (schema.records, schema.embeddings, schema.indexes, schema.fields):
                assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    assert index_files(store_path) == []


def test_create_collection_twice(store: mmstore.Store) -> None:
    store.create_collection("docs", encoders={"text": "hash_text"})
    with pytest.raises(mmstore.AlreadyExistsError):
        store.create_collection("docs", encoders={"text": "hash_text"})
    assert store.create_collection("docs", encoders={"text": "hash_text"}, exist_ok=True).name
    with pytest.raises(mmstore.AlreadyExistsError, match="another configuration"):
        store.create_collection(
            "docs", encoders={"text": {"encoder": "hash_text", "dim": 8}}, exist_ok=True
        )


@pytest.mark.parametrize(
    ("name", "encoders", "says"),
    [
        ("Bad-Name", {"text": "hash_text"}, "invalid collection name"),
        ("ok", {}, "at least one field"),
        ("ok", {"id": "hash_text"}, "reserved"),
        ("ok", {"text": {"model": "x"}}, "give an encoder"),
        ("ok", {"text": {"encoder": "hash_text", "colour": 1}}, "invalid parameters"),
        ("ok", {"text": {"encoder": "hash_text", "modality": "vector"}}, "encodes"),
        ("ok", {"emb": {"encoder": "precomputed"}}, "unknown modality"),
    ],
)
def test_bad_collection_configs(store: mmstore.Store, name: str, encoders: Any, says: str) -> None:
    with pytest.raises(mmstore.MMStoreError, match=says):
        store.create_collection(name, encoders=encoders)
    assert store.collections() == []


def test_unknown_collection(store: mmstore.Store) -> None:
    store.create_collection("products", encoders={"text": "hash_text"})
    with pytest.raises(mmstore.UnknownNameError, match="did you mean 'products'"):
        store.collection("product")


def test_verify_reports_agreement_and_file_state(store_path: Path) -> None:
    with open_store(store_path) as store:
        col = store.create_collection("docs", encoders={"text": "hash_text"})
        assert col.verify()[0]["file"] == "none yet"
        col.ingest(make_records(40))
    with open_store(store_path) as store:
        col = store.collection("docs")
        (report,) = col.verify()
        assert report["ok"] and report["file"] == "current"
        assert report["catalog_vectors"] == report["index_vectors"] == 40
        col.ingest(make_records(5, start=100))
        assert col.verify()[0]["file"] == "behind by 5 vectors (replayed on open)"
        index = col.indexes.get(col.fields["text"])
        index.remove(index.live_vids()[:2])  # an index that lost two vectors must not pass
        (bad,) = col.verify()
        assert not bad["ok"] and bad["missing_from_index"] == 2


def test_verify_command(store_path: Path) -> None:
    from click.testing import CliRunner

    from mmstore.cli.main import cli

    with mmstore.open(store_path) as store:  # built-in encoders only: the CLI loads no fakes
        col = store.create_collection(
            "v", encoders={"e": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
        )
        col.ingest([{"id": str(i), "e": [i, 1, 2, 3]} for i in range(5)])
    files = index_files(store_path)
    result = CliRunner().invoke(cli, ["verify", str(store_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    damaged = CliRunner().invoke(cli, ["verify", str(store_path)])
    assert damaged.exit_code == 1 and "damaged: checksum" in damaged.output
