"""Ray Data ingest and re-embedding (mmstore.ingest.on_ray) on a local two-CPU cluster started
here: the same rows, vectors and hits as local ingest; a killed encoder actor or an
interrupted driver loses and duplicates nothing, and a re-run encodes only what was not
committed.

Bad inputs tried: a record with text of the wrong type (an int) under ``on_error="raise"``
(nothing written, a typed error naming the record) and ``"skip"`` (listed, the rest
written), an unknown engine name (a typed error listing the engines), and an encoder
actor that kills its own process on one batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmstore
from mmstore.ingest import on_ray as ray_ingest
from mmstore.plugin.encoder import Encoder, EncoderParams
from mmstore.plugin.hookspecs import hookimpl
from mmstore.testing import FakePlugin, HashTextEncoder, stored_vectors
from tests.conftest import make_records

ray = pytest.importorskip("ray")

SBERT = {"encoder": "sentence_transformers", "batch_size": 2}  # 128 texts per actor batch


class TraceParams(EncoderParams):
    dim: int = 64
    seed: int = 0
    #: a file each encoded text is appended to (actors are other processes)
    log: str = ""
    #: the actor's process exits on its first batch while this file does not exist yet
    kill_flag: str = ""


class TraceEncoder(HashTextEncoder):
    """The hashing text encoder, logging what it encodes, and crashing once if asked."""

    name = "trace_text"
    Params = TraceParams
    params: TraceParams
    batch_size = 20

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        flag = self.params.kill_flag
        if flag and not os.path.exists(flag):
            Path(flag).write_text("killed once")
            os._exit(1)
        if self.params.log:
            with open(self.params.log, "a") as f:
                f.writelines(f"{item}\n" for item in items)
        return super().encode(items, modality)


class TracePlugin:
    @hookimpl
    def mmstore_register_encoders(self) -> list[type[Encoder]]:
        return [TraceEncoder]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's plugins
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def open_store(path: Path) -> mmstore.Store:
    return mmstore.open(path, plugins=[FakePlugin(), TracePlugin()])


def records(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = make_records(n)
    for i, r in enumerate(out):
        r["text"] += f" item{i}"  # no two alike, so no ties among hits
        r["emb"] = rng.normal(size=8).astype(np.float32)
    return out


def rows_of(col: mmstore.Collection) -> list[tuple[Any, ...]]:
    return col.store.catalog.query_arrow(
        "SELECT id, content_hash, label, meta, sources FROM mms_records WHERE collection = ? "
        "ORDER BY id",
        [col.name],
    ).to_pylist()


def vectors_of(col: mmstore.Collection) -> dict[tuple[str, str], np.ndarray]:
    return {(r["record_id"], r["field"]): r["vector"] for r in stored_vectors(col)}


#: records ingested both ways (encoded twice by the real model, about 130 texts/s on 2 cores)
N_SAME = 240


def test_ray_ingest_matches_local_ingest(tmp_path: Path) -> None:
    encoders = {
        "text": SBERT,
        "emb": {"encoder": "precomputed", "modality": "vector", "dim": 8},
    }
    data = records(N_SAME)
    with open_store(tmp_path / "a") as a, open_store(tmp_path / "b") as b:
        local = a.create_collection("c", encoders=encoders)
        remote = b.create_collection("c", encoders=encoders)
        local.ingest(data)
        report = remote.ingest(data, engine="ray", chunk_size=100)
        assert (report.received, report.written, report.rejected) == (N_SAME, N_SAME, [])
        assert rows_of(local) == rows_of(remote)
        want, got = vectors_of(local), vectors_of(remote)
        assert want.keys() == got.keys() and len(got) == 2 * N_SAME
        assert all(np.allclose(want[k], got[k], atol=1e-5) for k in want)
        for query in ("red apple", "fresh green mango"):
            hits_a = local.search(text=query, target="text", k=10)
            hits_b = remote.search(text=query, target="text", k=10)
            assert [h.id for h in hits_a] == [h.id for h in hits_b]
        again = remote.ingest(data, engine="ray")
        assert (again.unchanged, again.written, again.encoded) == (N_SAME, 0, 0)


def test_killed_actor_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    flag, log = tmp_path / "killed", tmp_path / "encoded.log"
    spec = {"encoder": "trace_text", "kill_flag": str(flag), "log": str(log)}
    with open_store(tmp_path / "s") as store:
        col = store.create_collection("c", encoders={"text": spec})
        report = col.ingest(make_records(100), engine="ray", chunk_size=30)
        assert flag.exists() and report.written == 100
        ids = [r["id"] for r in rows_of(col)]
        assert sorted(ids) == sorted(f"r{i}" for i in range(100))
        assert len(vectors_of(col)) == 100


def test_interrupted_driver_resumes_without_reencoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "encoded.log"
    data = make_records(120)
    for i, r in enumerate(data):
        r["text"] += f" n{i}"  # one line of the log per record
    real, commits = ray_ingest.RayIngest._commit, []

    def crash_after_two(self: Any, recs: list[Any], given: Any) -> None:
        real(self, recs, given)
        commits.append(len(recs))
        if len(commits) == 2:
            raise KeyboardInterrupt("driver interrupted")

    with open_store(tmp_path / "s") as store:
        col = store.create_collection(
            "c", encoders={"text": {"encoder": "trace_text", "log": str(log)}}
        )
        monkeypatch.setattr(ray_ingest.RayIngest, "_commit", crash_after_two)
        with pytest.raises(KeyboardInterrupt):
            col.ingest(data, engine="ray", chunk_size=20)
        committed = len(col)
        assert committed == sum(commits) > 0
        monkeypatch.undo()
        log.write_text("")
        report = col.ingest(data, engine="ray", chunk_size=20)
        assert (report.unchanged, report.written) == (committed, 120 - committed)
        assert len(log.read_text().splitlines()) == 120 - committed  # none encoded twice
        assert len(col) == 120 and len(vectors_of(col)) == 120


def test_wrong_type_raise_writes_nothing_and_names_the_record(tmp_path: Path) -> None:
    data = make_records(50)
    data[17]["text"] = 12345
    with open_store(tmp_path / "s") as store:
        col = store.create_collection("c", encoders={"text": {"encoder": "hash_text"}})
        with pytest.raises(mmstore.RecordError) as e:
            col.ingest(data, engine="ray", chunk_size=10)
        assert e.value.record_id == "r17" and e.value.field == "text"
        assert len(col) == 0
        report = col.ingest(data, engine="ray", on_error="skip", chunk_size=10)
        assert [(r.id, r.field) for r in report.rejected] == [("r17", "text")]
        assert report.written == 49 and len(col) == 49


def test_unknown_engine_lists_the_engines(col: mmstore.Collection) -> None:
    with pytest.raises(mmstore.UnknownNameError, match="local, ray"):
        col.ingest(make_records(2), engine="nope")


def test_reembed_on_ray_switches_to_the_new_space(tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as store:
        col = store.create_collection("c", encoders={"text": {"encoder": "hash_text"}})
        col.ingest(make_records(60))
        report = col.reembed("text", encoder={"encoder": "hash_text", "seed": 7}, engine="ray")
        assert report.switched and report.encoded == 60 and not report.rejected
        local = HashTextEncoder(seed=7).encode([make_records(1)[0]["text"]], "text")[0]
        got = vectors_of(col)["r0", "text"]
        assert np.allclose(got, local / np.linalg.norm(local), atol=1e-6)


def test_cli_ingest_with_ray_engine(tmp_path: Path) -> None:
    source = tmp_path / "r.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in make_records(30)))
    store = tmp_path / "s"
    with mmstore.open(store) as s:
        s.create_collection("docs", encoders={"text": {"encoder": "sentence_transformers"}})
    cmd = [sys.executable, "-m", "mmstore", "ingest", str(store), "docs", str(source)]
    address = ray.get_runtime_context().gcs_address  # the test's cluster: no second start
    result = subprocess.run(
        [*cmd, "--engine", "ray", "--address", address, "--no-progress", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["written"] == 30


def test_the_docs_cli_example_runs(tmp_path: Path) -> None:
    """docs/distributed.md's ``mmstore ingest ... --engine ray`` as written, joined to this
    module's cluster with its ``--address``."""
    from tests.test_docs_examples import block, products_of_vectors, vector_products

    products_of_vectors(tmp_path / "catalog.mms", ingest=False)
    rows = vector_products(12)
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    address = ray.get_runtime_context().gcs_address
    command = block("docs/distributed.md:26", **{"[--address ADDR]": f"--address {address}"})
    args = command.split()
    assert args[0] == "mmstore"
    result = subprocess.run(
        [sys.executable, "-m", "mmstore", *args[1:], "--no-progress", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["written"] == 12
