"""The CLI beside a running service: while ``mmstore serve`` (its own process, a real port)
holds the store, the CLI's read verbs (search, info, heads, predict, collections) and its
writes (ingest, train) go through the service it finds in ``service.json``, or the one
``--url`` names, with ``--key`` or ``MMSTORE_KEY``.

Bad inputs tried: no key (a clear message naming the service, the scope and the fix), a
wrong key (401), a read key writing (403), a folder ingest and ``--engine ray`` through the
service (refused: they run beside the store), a bad line with ``--skip-bad``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import mmstore
from mmstore.cli.main import cli as main
from mmstore.service.keys import KeyStore
from tests.servers import answers, free_port

VEC = {"emb": {"encoder": "precomputed", "modality": "vector", "dim": 4}}


def vec(label: int, i: int) -> list[float]:
    base = [1.0, 0.0, 0.0, 0.0] if label == 0 else [0.0, 1.0, 0.0, 0.0]
    return [b + 0.01 * ((i * (j + 3)) % 7) for j, b in enumerate(base)]


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A store with a collection of 40 records and two keys, held by ``mmstore serve``."""
    path = tmp_path_factory.mktemp("held") / "store"
    with mmstore.open(path) as store:
        col = store.create_collection("c", encoders=VEC)
        col.ingest([{"id": f"r{i}", "label": f"k{i % 2}", "emb": vec(i % 2, i)} for i in range(40)])
        keys = KeyStore(store.catalog)
        _, admin = keys.create("admin", ["admin"], "*")
        _, reader = keys.create("reader", ["read"], ["c"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mmstore", "serve", str(path), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while not (path / "service.json").exists() or not answers(url):
            assert proc.poll() is None and time.monotonic() < deadline, "service did not start"
            time.sleep(0.2)
        yield {"path": str(path), "url": url, "admin": admin, "reader": reader}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_without_a_key_the_cli_says_which_service_and_what_to_give(held: dict[str, Any]) -> None:
    out = cli("search", held["path"], "c", "--record", "r1", "--target", "emb")
    assert out.exit_code == 1
    assert f"the mmstore service at {held['url']} holds the store" in out.output
    assert "scope 'read'" in out.output and "--key" in out.output and "MMSTORE_KEY" in out.output
    wrong = cli("info", held["path"], "c", "--key", "mms_wrong")
    assert wrong.exit_code == 1 and "HTTP 401" in wrong.output


def test_read_verbs_go_through_the_service(held: dict[str, Any]) -> None:
    path, key = held["path"], held["reader"]
    hits = cli("search", path, "c", "--record", "r2", "--target", "emb", "-k", "3", "--key", key)
    assert hits.exit_code == 0, hits.output
    assert len(hits.output.splitlines()) == 3 and " r2 " not in hits.output
    env = {"MMSTORE_KEY": key}
    info = cli("info", path, "c", "--json", env=env)
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["records"] == 40
    names = cli("collections", path, env=env)
    assert names.exit_code == 0 and names.output.split() == ["c"]
    by_url = cli("collections", "unused", "--url", held["url"], "--key", key)
    assert by_url.exit_code == 0 and by_url.output.split() == ["c"]


def test_writes_go_through_the_service_with_a_write_key(
    held: dict[str, Any], tmp_path: Path
) -> None:
    path = held["path"]
    file = tmp_path / "more.jsonl"
    rows = [{"id": f"n{i}", "label": f"k{i % 2}", "emb": vec(i % 2, i + 50)} for i in range(6)]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused = cli("ingest", path, "c", str(file), "--key", held["reader"])
    assert refused.exit_code == 1 and "HTTP 403" in refused.output
    done = cli("ingest", path, "c", str(file), "--key", held["admin"], "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["written"] == 6
    trained = cli("train", path, "c", "clf", "--inputs", "emb", "--key", held["admin"])
    assert trained.exit_code == 0, trained.output
    assert "head 'clf' (classifier): accuracy" in trained.output
    listed = cli("heads", path, "c", "--key", held["reader"])
    assert listed.exit_code == 0 and listed.output.startswith("clf")
    predicted = cli("predict", path, "c", "clf", "--ids", "r0,r1", "--key", held["reader"])
    assert predicted.exit_code == 0, predicted.output
    assert [line.split("\t")[:2] for line in predicted.output.splitlines()] == [
        ["r0", "k0"],
        ["r1", "k1"],
    ]


def test_predict_skip_bad_through_the_service(held: dict[str, Any], tmp_path: Path) -> None:
    file = tmp_path / "new.jsonl"
    file.write_text(json.dumps({"id": "x", "emb": vec(1, 3)}) + "\n" + '{"id": "y"}\n')
    admin = held["admin"]
    if "clf" not in cli("heads", held["path"], "c", "--key", admin).output:
        cli("train", held["path"], "c", "clf", "--inputs", "emb", "--key", admin)
    out = cli(
        "predict", held["path"], "c", "clf", "--file", str(file), "--skip-bad", "--key", admin
    )
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("x\tk1") and lines[1].startswith("y\tskipped:")


def test_what_runs_only_beside_the_store_is_refused_by_name(
    held: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    out = cli("ingest", held["path"], "c", str(folder), "--key", held["admin"])
    assert out.exit_code == 1 and "a folder is ingested beside the store" in out.output
    file = tmp_path / "one.jsonl"
    file.write_text(json.dumps({"id": "z", "emb": vec(0, 1)}) + "\n")
    ray = cli("ingest", held["path"], "c", str(file), "--engine", "ray", "--key", held["admin"])
    assert ray.exit_code == 1 and "--engine ray is ingested beside the store" in ray.output
