"""Re-embedding: a changed encoder (new version of its plugin, or a new configuration)
keeps the stored space searchable while ``col.reembed`` fills the new one from stored
sources; an interrupted re-embedding resumes; the switch is atomic and leaves no vector of
the old space behind.

Bad inputs tried: an unknown field, a new configuration that changes the modality, a
stored media blob that has gone missing (raise: nothing switched; skip: switched, listed),
ingest while a re-embedding is pending, a text query into a space whose encoder is no
longer installed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmstore
from mmstore.plugin.events import Event, FieldSwitched, ReembedProgress
from mmstore.testing import FakePlugin, HashTextEncoder
from tests.conftest import make_records


def open_store(path: Path, *plugins: Any) -> mmstore.Store:
    return mmstore.open(path, plugins=[FakePlugin(), *plugins])


def run_child(script: str, code: int, *args: str) -> None:
    """Run ``script`` in a fresh interpreter, which must end with exit status ``code``."""
    child = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert child.returncode == code, child.stderr


def catalog_keys(col: mmstore.Collection, field: str) -> dict[str, int]:
    rows = col.store.catalog.query_arrow(
        "SELECT encoder_key, count(*) AS n FROM mms_embeddings WHERE collection = ? "
        "AND field = ? GROUP BY ALL",
        [col.name, field],
    ).to_pylist()
    return {r["encoder_key"]: r["n"] for r in rows}


def assert_only_new_space(col: mmstore.Collection, field: str) -> None:
    """The index serves exactly the catalog's vectors of the configured encoder, and each
    equals what that encoder gives for the record's stored text."""
    f = col.fields[field]
    assert col.active[field] is f and catalog_keys(col, field) == {f.key: len(col)}
    index = col.indexes.get(f)
    assert sorted(index.live_vids()) == sorted(col.indexes.live_vids(f))
    hits = col.search(vector=f.encoder.encode(["red apple"], "text")[0], target=field, k=5)
    for hit in hits:
        expected = f.encoder.encode([hit.values[field]], "text")[0]
        expected = expected / np.linalg.norm(expected)
        query = f.encoder.encode(["red apple"], "text")[0]
        assert hit.score == pytest.approx(
            float(expected @ (query / np.linalg.norm(query))), abs=1e-5
        )


class NewerHash(HashTextEncoder):
    """The fake encoder after a plugin upgrade: version 2 hashes with another salt."""

    version = "2"

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        return super().encode([f"v2 {t}" for t in items], modality)


class NewerPlugin:
    @mmstore.hookimpl
    def mmstore_register_encoders(self) -> list[type]:
        return [NewerHash]


def test_new_encoder_version_serves_the_old_space_until_reembedded(store_path: Path) -> None:
    with open_store(store_path) as store:
        store.create_collection("docs", encoders={"text": "hash_text"}).ingest(make_records(30))
    with mmstore.open(store_path, plugins=[NewerPlugin()]) as store:
        col = store.collection("docs")
        old_key = col.active["text"].key
        assert col.pending("text")
        (space,) = col.spaces()
        assert space["state"] == "reembedding" and space["encoder_version"] == "1"
        assert space["pending"]["encoder_version"] == "2"
        assert [v["vectors"] for v in space["vectors_by_encoder"]] == [30]
        # version 1 is not installed: a text query cannot enter its space; records can
        with pytest.raises(mmstore.EncoderChangedError, match="version 1") as err:
            col.search(text="red apple")
        assert err.value.http_status == 409
        assert len(col.search(record="r1", k=3)) == 3
        with pytest.raises(mmstore.EncoderChangedError, match=r"reembed\('text'\)"):
            col.ingest(make_records(1, start=50))
        report = col.reembed("text")
        assert report.switched and report.encoded == 30 and report.old_key == old_key
        assert not col.pending("text") and col.spaces()[0]["encoder_version"] == "2"
        assert_only_new_space(col, "text")
        col.ingest(make_records(1, start=50))
    with mmstore.open(store_path, plugins=[NewerPlugin()]) as store:
        col = store.collection("docs")
        assert not col.pending("text") and len(col) == 31
        assert col.verify()[0]["ok"]
        assert_only_new_space(col, "text")


class Watcher:
    """Searches the collection after every committed batch of a re-embedding."""

    def __init__(self) -> None:
        self.col: mmstore.Collection | None = None
        self.seen: list[tuple[int, list[str]]] = []
        self.switched: list[FieldSwitched] = []

    @mmstore.hookimpl
    def mmstore_track_event(self, event: Event) -> None:
        if isinstance(event, ReembedProgress) and self.col is not None:
            hits = self.col.search(text="red apple", k=5)
            assert self.col.active["text"].identity.dim == 16  # still the old space
            self.seen.append((event.done, hits.ids))
        if isinstance(event, FieldSwitched):
            self.switched.append(event)


def test_config_change_searches_work_throughout(store_path: Path) -> None:
    watcher = Watcher()
    with open_store(store_path, watcher) as store:
        col = store.create_collection(
            "docs", encoders={"text": {"encoder": "hash_text", "dim": 16}}
        )
        col.ingest(make_records(45))
        before = col.search(text="red apple", k=5).ids
        watcher.col = col
        report = col.reembed("text", encoder={"encoder": "hash_text", "dim": 32}, batch_size=10)
        assert [done for done, _ in watcher.seen] == [10, 20, 30, 40, 45]
        assert all(ids == before for _, ids in watcher.seen)
        assert report.switched and report.encoded == 45
        assert watcher.switched[0].vectors == 45
        assert col.fields["text"].identity.dim == 32
        assert col.search(vector=np.ones(32), k=1).ids
        assert_only_new_space(col, "text")
    with open_store(store_path) as store:  # the new configuration was stored
        assert store.collection("docs").fields["text"].identity.dim == 32


KILL_CHILD = textwrap.dedent(
    """
    import os, sys
    import mmstore
    from mmstore.plugin.events import ReembedProgress
    from mmstore.testing import FakePlugin

    class Killer:
        @mmstore.hookimpl
        def mmstore_track_event(self, event):
            if isinstance(event, ReembedProgress) and event.done >= 20:
                os._exit(17)

    store = mmstore.open(sys.argv[1], plugins=[FakePlugin(), Killer()])
    store.collection("docs").reembed(
        "text", encoder={"encoder": "hash_text", "dim": 16, "seed": 7}, batch_size=10
    )
    """
)


def test_reembed_killed_midway_resumes_after_reopen(store_path: Path) -> None:
    with open_store(store_path) as store:
        col = store.create_collection(
            "docs", encoders={"text": {"encoder": "hash_text", "dim": 16}}
        )
        col.ingest(make_records(50))
        expected = col.search(text="red apple", k=5).ids
        old_key = col.fields["text"].key
    run_child(KILL_CHILD, 17, str(store_path))
    with open_store(store_path) as store:
        col = store.collection("docs")
        new_key = col.fields["text"].key
        assert col.pending("text") and col.active["text"].key == old_key
        assert catalog_keys(col, "text") == {old_key: 50, new_key: 20}
        assert col.search(text="red apple", k=5).ids == expected  # the old space serves
        assert col.verify()[0]["ok"]
        report = col.reembed("text", batch_size=10)
        assert (report.already, report.encoded, report.switched) == (20, 30, True)
        assert_only_new_space(col, "text")
        assert col.search(text="red apple", k=5).ids  # the new space serves
    with open_store(store_path) as store:
        assert_only_new_space(store.collection("docs"), "text")


class Blob(mmstore.Modality):
    """Bytes kept in the media store, as image and audio are."""

    name = "blob"
    inline = False

    def validate(self, value: Any, record_id: object, field: str) -> bytes:
        if not isinstance(value, bytes):
            raise mmstore.RecordError(record_id, field, "expected bytes")
        return value

    def to_source(self, value: Any) -> Any:
        assert self.media is not None
        return {"media": self.media.put(value)}

    def from_source(self, source: Any) -> bytes:
        assert self.media is not None
        return self.media.get(source["media"])

    def fingerprint(self, value: Any) -> bytes:
        return bytes(value)


class BlobHash(HashTextEncoder):
    name = "blob_hash"
    modalities = ("blob",)

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        return super().encode([hashlib.md5(b).hexdigest() for b in items], modality)


class BlobPlugin:
    @mmstore.hookimpl
    def mmstore_register_modalities(self) -> list[type]:
        return [Blob]

    @mmstore.hookimpl
    def mmstore_register_encoders(self) -> list[type]:
        return [BlobHash]


def test_reembed_reads_media_not_originals_and_reports_a_lost_blob(store_path: Path) -> None:
    with open_store(store_path, BlobPlugin()) as store:
        col = store.create_collection("b", encoders={"blob": {"encoder": "blob_hash", "dim": 8}})
        col.ingest([{"id": f"x{i}", "blob": f"payload {i}".encode()} for i in range(6)])
        lost = store.media.path(store.media.digest(b"payload 3"))
        assert lost.is_file()
        lost.unlink()
        new = {"encoder": "blob_hash", "dim": 8, "seed": 1}
        with pytest.raises(mmstore.RecordError, match="x3") as err:
            col.reembed("blob", encoder=new, batch_size=2)
        assert err.value.field == "blob" and "missing" in err.value.problem
        assert col.pending("blob")  # nothing switched
        assert len(col.search(record="x1", k=2)) == 2
        report = col.reembed("blob", on_error="skip", batch_size=2)
        assert report.switched and report.already == 2 and report.encoded == 3
        assert [r.id for r in report.rejected] == ["x3"]
        assert catalog_keys(col, "blob") == {col.fields["blob"].key: 5}
        assert "x3" not in col.search(record="x1", k=10).ids


def test_bad_reembed_requests(store: mmstore.Store) -> None:
    col = store.create_collection("docs", encoders={"text": "hash_text"})
    col.ingest(make_records(3))
    with pytest.raises(mmstore.UnknownNameError, match="did you mean 'text'"):
        col.reembed("txt")
    with pytest.raises(mmstore.InvalidInputError, match="keeps the modality"):
        col.reembed("text", encoder={"encoder": "precomputed", "modality": "vector", "dim": 4})
    report = col.reembed("text")  # nothing changed: nothing to do
    assert (report.encoded, report.switched, report.old_key) == (0, False, report.new_key)
    with pytest.raises(ValueError, match="batch_size"):
        col.reembed("text", batch_size=0)


@pytest.mark.slow
def test_reembed_and_spaces_commands(store_path: Path) -> None:
    from click.testing import CliRunner

    from mmstore.cli.main import cli

    with mmstore.open(store_path) as store:  # built-in encoders only: the CLI loads no fakes
        store.create_collection("t", encoders={"text": "sentence_transformers"}).ingest(
            make_records(5)
        )
        col = store.create_collection(
            "v", encoders={"e": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
        )
        col.ingest([{"id": str(i), "e": [i, 1, 2, 3]} for i in range(5)])
    runner = CliRunner()
    new = '{"encoder": "sentence_transformers", "normalize": false}'
    out = runner.invoke(
        cli, ["reembed", str(store_path), "t", "text", "--encoder", new, "--no-progress"]
    )
    assert out.exit_code == 0, out.output
    assert "5 encoded now" in out.output and "switched to" in out.output
    shown = runner.invoke(cli, ["spaces", str(store_path), "t", "--json"])
    (space,) = json.loads(shown.output)
    assert space["state"] == "current" and space["params"]["normalize"] is False
    assert space["vectors_by_encoder"][0]["vectors"] == 5
    found = runner.invoke(
        cli, ["search", str(store_path), "t", "--text", make_records(1)[0]["text"]]
    )
    assert found.output.split()[1] == "r0"
    bad = runner.invoke(cli, ["reembed", str(store_path), "t", "nope", "--no-progress"])
    assert bad.exit_code != 0 and "unknown field 'nope'; available: text" in bad.output
    vec = '{"encoder": "precomputed", "modality": "vector", "dim": 4, "metric": "ip"}'
    kept = runner.invoke(cli, ["reembed", str(store_path), "v", "e", "--encoder", vec])
    assert kept.exit_code != 0 and "keeps only the vector" in kept.output


def test_new_configuration_keeps_the_modality_and_respects_encoder_batches(
    store: mmstore.Store,
) -> None:
    calls: list[int] = []

    class Counting(HashTextEncoder):
        name = "counting_hash"
        batch_size = 4

        def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
            calls.append(len(items))
            return super().encode(items, modality)

    class CountingPlugin:
        @mmstore.hookimpl
        def mmstore_register_encoders(self) -> list[type]:
            return [Counting]

    store.plugins.register(CountingPlugin())
    col = store.create_collection(
        "docs", encoders={"body": {"encoder": "hash_text", "modality": "text"}}
    )
    col.ingest([{"id": r["id"], "body": r["text"]} for r in make_records(10)])
    report = col.reembed("body", encoder="counting_hash", batch_size=100)
    assert report.switched and col.fields["body"].modality.name == "text"
    assert calls == [4, 4, 2]


class OpaqueHash(HashTextEncoder):
    """Identity parameters that are not constructor arguments (as OpenCLIP's weights
    digest is not): the serving encoder cannot be rebuilt from its identity row alone."""

    name = "opaque_hash"

    def identity_params(self) -> dict[str, Any]:
        return {"width": self.dim, "salt": self.params.seed}


class Flaky(HashTextEncoder):
    """Fails on every encode call after the first `budget` (an interrupted run)."""

    name = "flaky_hash"
    budget = 1

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        if Flaky.budget <= 0:
            raise RuntimeError("interrupted")
        Flaky.budget -= 1
        return super().encode(items, modality)


class MorePlugin:
    @mmstore.hookimpl
    def mmstore_register_encoders(self) -> list[type]:
        return [OpaqueHash, Flaky]


def interrupted_reembed(col: mmstore.Collection, encoder: dict[str, Any]) -> None:
    Flaky.budget = 1
    with pytest.raises(mmstore.EncoderError, match="interrupted"):
        col.reembed("text", encoder=encoder, batch_size=10)


def test_cancelled_or_redirected_reembedding_leaves_no_other_space(store_path: Path) -> None:
    with open_store(store_path, MorePlugin()) as store:
        original = {"encoder": "opaque_hash", "dim": 16}
        col = store.create_collection("docs", encoders={"text": original})
        col.ingest(make_records(20))
        before = col.search(text="red apple", k=5).ids
        interrupted_reembed(col, {"encoder": "flaky_hash", "dim": 16, "seed": 3})
        assert col.pending("text") and len(catalog_keys(col, "text")) == 2
        # the serving space takes text queries: its configuration was kept
        assert col.search(text="red apple", k=5).ids == before
    with open_store(store_path, MorePlugin()) as store:
        col = store.collection("docs")
        assert col.search(text="red apple", k=5).ids == before  # also after reopening
        report = col.reembed("text", encoder=original)  # cancel
        assert (report.encoded, report.switched, report.dropped) == (0, False, 10)
        assert not col.pending("text") and catalog_keys(col, "text") == {col.fields["text"].key: 20}
        changed = [r | {"text": r["text"] + " zebra"} for r in make_records(20)]
        col.ingest(changed)
        hits = col.search(text="zebra", k=40)
        assert len(hits) == 20 and len(set(hits.ids)) == 20
        assert col.verify()[0]["ok"]
        interrupted_reembed(col, {"encoder": "flaky_hash", "dim": 16, "seed": 4})
        report = col.reembed("text", encoder={"encoder": "hash_text", "dim": 16, "seed": 5})
        assert report.switched and report.dropped == 30  # the old space and the abandoned one
        assert_only_new_space(col, "text")
        assert "serving" not in store.catalog.query_arrow(
            "SELECT config FROM mms_collections", []
        ).to_pylist()[0]["config"].replace('"serving":{}', "")


def test_skip_refuses_a_switch_that_would_empty_the_field(store_path: Path) -> None:
    with open_store(store_path, BlobPlugin()) as store:
        col = store.create_collection("b", encoders={"blob": {"encoder": "blob_hash", "dim": 8}})
        col.ingest([{"id": f"x{i}", "blob": f"payload {i}".encode()} for i in range(3)])
        for i in range(3):
            store.media.path(store.media.digest(f"payload {i}".encode())).unlink()
        with pytest.raises(mmstore.InvalidInputError, match="nothing was switched"):
            col.reembed(
                "blob", encoder={"encoder": "blob_hash", "dim": 8, "seed": 2}, on_error="skip"
            )
        assert col.pending("blob") and len(col.search(record="x1", k=5)) == 2


def test_a_moved_referenced_file_is_updated_by_ingest_and_reembeds(tmp_path: Path) -> None:
    """keep='reference': the same bytes at a new path rewrite the record's source (no
    re-encoding), so a later re-embedding reads the file where it now is."""
    import soundfile as sf

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    t = np.arange(8000, dtype=np.float32) / 8000
    sf.write(old / "a.wav", np.sin(2 * np.pi * 440 * t), 8000)
    options = {"audio": {"roots": [str(tmp_path)], "keep": "reference"}}
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("a", encoders={"audio": "logmel"}, options=options)
        col.ingest({"id": "a", "audio": str(old / "a.wav")})
        (old / "a.wav").rename(new / "a.wav")
        report = col.ingest({"id": "a", "audio": str(new / "a.wav")})
        assert (report.written, report.encoded) == (1, 0)
        assert col.get("a")[0]["audio"]["path"] == str((new / "a.wav").resolve())
        report = col.reembed("audio", encoder={"encoder": "logmel", "n_mels": 32})
        assert report.switched and report.encoded == 1 and not report.rejected


KILL_AT = textwrap.dedent(
    """
    import os, sys
    import mmstore
    from mmstore.index import collection as indexes
    from mmstore.storage import embeddings
    from mmstore.testing import FakePlugin

    where = sys.argv[2]
    if where == "inside_batch":  # rows inserted, transaction not committed
        insert = embeddings.insert  # the vectors of one re-embedded batch
        calls = []

        def dying(*args):
            vids = insert(*args)
            calls.append(1)
            if len(calls) == 2:
                os._exit(18)
            return vids

        embeddings.insert = dying
    else:  # the switch committed, the new index not yet saved
        indexes.CollectionIndexes.save = lambda self, field: os._exit(18)
    store = mmstore.open(sys.argv[1], plugins=[FakePlugin()])
    store.collection("docs").reembed(
        "text", encoder={"encoder": "hash_text", "dim": 16, "seed": 9}, batch_size=10
    )
    """
)


@pytest.mark.parametrize("where", ["inside_batch", "after_switch"])
def test_killed_inside_a_batch_or_after_the_switch(store_path: Path, where: str) -> None:
    with open_store(store_path) as store:
        col = store.create_collection(
            "docs", encoders={"text": {"encoder": "hash_text", "dim": 16}}
        )
        col.ingest(make_records(30))
        old_key = col.fields["text"].key
    run_child(KILL_AT, 18, str(store_path), where)
    with open_store(store_path) as store:
        col = store.collection("docs")
        keys = catalog_keys(col, "text")
        if where == "inside_batch":  # the first batch committed, the second rolled back
            assert col.pending("text") and keys[old_key] == 30 and sum(keys.values()) == 40
            assert col.search(text="red apple", k=3).ids
            col.reembed("text", batch_size=10)
        else:  # switched; the index is rebuilt from the catalog
            assert not col.pending("text") and old_key not in keys
        assert col.verify()[0]["ok"]
        assert_only_new_space(col, "text")


def test_collect_media_removes_only_unreferenced_blobs(store_path: Path) -> None:
    """Deleted records and changed content leave blobs (a failed ingest removes its own);
    gc removes those and keeps every blob a record still names (also one shared by two
    records)."""
    from click.testing import CliRunner

    from mmstore.cli.main import cli

    with open_store(store_path, BlobPlugin()) as store:
        col = store.create_collection("b", encoders={"blob": {"encoder": "blob_hash", "dim": 8}})
        col.ingest([{"id": f"x{i}", "blob": f"payload {i}".encode()} for i in range(4)])
        col.ingest({"id": "twin", "blob": b"payload 1"})  # shares x1's blob
        col.delete(["x0", "x1"])
        col.ingest({"id": "x2", "blob": b"new content"})  # x2's old blob is orphaned
        with pytest.raises(mmstore.RecordError):  # a failed ingest removes the blobs it wrote
            col.ingest(
                [{"id": "y", "blob": b"orphan"}, {"id": "z", "blob": "not bytes"}], chunk_size=1
            )
        digest = store.media.digest
        assert not store.media.exists(digest(b"orphan"))
        assert store.collect_media(dry_run=True) == {"kept": 3, "removed": 2, "bytes_freed": 18}
        assert store.media.exists(digest(b"payload 0"))  # dry run removed nothing
    result = CliRunner().invoke(cli, ["gc", str(store_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"kept": 3, "removed": 2, "bytes_freed": 18}
    with open_store(store_path, BlobPlugin()) as store:
        for gone in (b"payload 0", b"payload 2", b"orphan"):
            assert not store.media.exists(store.media.digest(gone))
        for kept in (b"payload 1", b"payload 3", b"new content"):
            assert store.media.exists(store.media.digest(kept))
        col = store.collection("b")
        assert col.reembed("blob", encoder={"encoder": "blob_hash", "dim": 8, "seed": 3}).switched
