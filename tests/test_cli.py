"""The command line: demo, plugins, migrate, collections and info; errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmstore
from mmstore.cli.main import cli as main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmstore", *args], capture_output=True, text=True, timeout=300
    )


def test_plugins_lists_builtins_with_versions_and_hooks() -> None:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    names = {p["name"]: p for p in data["plugins"]}
    assert names["sentence_transformers"]["version"] == mmstore.__version__
    assert "mmstore_register_encoders" in names["sentence_transformers"]["hooks"]
    assert data["encoders"]["sentence_transformers"] == "sentence_transformers"
    assert data["modalities"]["text"] == "text"
    plain = CliRunner().invoke(main, ["plugins"])
    assert "encoders:" in plain.output and "precomputed" in plain.output


def test_collections_and_info(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection(
            "v", encoders={"e": {"encoder": "precomputed", "modality": "vector", "dim": 3}}
        )
        col.ingest([{"id": "a", "e": [1, 2, 3]}])
    runner = CliRunner()
    out = runner.invoke(main, ["collections", str(tmp_path / "s"), "--json"])
    assert json.loads(out.output) == ["v"]
    info = runner.invoke(main, ["info", str(tmp_path / "s"), "v", "--json"])
    data = json.loads(info.output)
    assert data["records"] == 1 and data["fields"][0]["index"]["kind"] == "flat"
    text = runner.invoke(main, ["info", str(tmp_path / "s"), "v"])
    assert "precomputed" in text.output


def test_errors_are_one_line_with_exit_code_1(tmp_path: Path) -> None:
    mmstore.open(tmp_path / "s").close()
    result = run("info", str(tmp_path / "s"), "nope")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: unknown collection 'nope'")
    assert "Traceback" not in result.stderr
    missing = run("collections", str(tmp_path / "absent"))
    assert missing.returncode == 1 and "no store" in missing.stderr
    traced = run("--traceback", "info", str(tmp_path / "s"), "nope")
    assert "Traceback" in traced.stderr


def test_migrate_needs_a_store(tmp_path: Path) -> None:
    result = run("migrate", str(tmp_path / "absent"))
    assert result.returncode == 1 and "no store" in result.stderr


@pytest.mark.slow
def test_demo_builds_searches_and_reopens(tmp_path: Path) -> None:
    result = run("demo", "--path", str(tmp_path / "demo.mms"), "--limit", "300")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "300 docstrings" in out and "300 written" in out
    assert "search 'read the contents of a compressed archive'" in out
    assert "reopened in" in out and "300 records" in out


def _init(store: Path) -> None:
    result = run("init", str(store), "docs", "--fields", '{"text": "sentence_transformers"}')
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_init_ingest_search_from_files(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = tmp_path / "s.mms"
    _init(store)
    lines = [
        {"id": "a", "text": "a cat sleeps on the sofa", "label": "pets"},
        {"id": "b", "text": "interest rates rise again", "label": "money"},
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    result = run("ingest", str(store), "docs", str(tmp_path / "r.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "2 written" in result.stdout and "ingest docs" in result.stderr  # progress is on
    pq.write_table(
        pa.table({"id": ["c"], "text": ["the bank raised its rates"]}), tmp_path / "r.parquet"
    )
    (tmp_path / "r.csv").write_text("id,text,label\nd,a kitten on a warm rug,pets\n")
    for name in ("r.parquet", "r.csv"):
        assert run("ingest", str(store), "docs", str(tmp_path / name)).returncode == 0
    found = run("search", str(store), "docs", "--text", "a small cat", "-k", "2", "--json")
    assert found.returncode == 0, found.stderr
    assert {h["id"] for h in json.loads(found.stdout)} == {"a", "d"}
    money = run(
        "search",
        str(store),
        "docs",
        "--text",
        "finance",
        "--where",
        '{"label": {"$ne": "pets"}}',
        "-k",
        "5",
        "--json",
    )
    assert [h["id"] for h in json.loads(money.stdout)][:1] in (["b"], ["c"])


@pytest.mark.slow
def test_ingest_bad_line_names_its_number_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "s.mms"
    _init(store)
    (tmp_path / "bad.jsonl").write_text(
        '{"id": "a", "text": "fine"}\n{"id": "b", "text": oops}\n{"id": "c", "text": ""}\n'
    )
    result = run("ingest", str(store), "docs", str(tmp_path / "bad.jsonl"))
    assert result.returncode == 1
    assert "bad.jsonl:2: not valid JSON" in result.stderr
    with mmstore.open(store, read_only=True) as s:
        assert len(s.collection("docs")) == 0
    skipped = run("ingest", str(store), "docs", str(tmp_path / "bad.jsonl"), "--skip-bad", "--json")
    report = json.loads(skipped.stdout)
    assert report["written"] == 1
    assert any("bad.jsonl:2" in r for r in report["rejected"])
    assert any(r.startswith("c (text)") for r in report["rejected"])


def test_bad_cli_arguments(tmp_path: Path) -> None:
    assert "not valid JSON" in run("init", str(tmp_path / "s"), "c", "--fields", "{").stderr
    (tmp_path / "x.txt").write_text("hello")
    mmstore.open(tmp_path / "s").close()
    result = run("ingest", str(tmp_path / "s"), "c", str(tmp_path / "x.txt"))
    assert result.returncode == 1 and "unknown" in result.stderr


def test_encoders_lists_parameters_and_modalities() -> None:
    result = CliRunner().invoke(main, ["encoders", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["open_clip"]["modalities"] == ["image", "text"]
    assert rows["open_clip"]["params"]["pretrained"] == "required"
    assert rows["precomputed"]["params"]["dim"] == "required"
    assert rows["tabular"]["fitted"] is True and rows["logmel"]["plugin"] == "audio"
    assert rows["sentence_transformers"]["params"]["model"] == "all-MiniLM-L6-v2"
    plain = CliRunner().invoke(main, ["encoders"])
    assert "logmel" in plain.output and "sample_rate=16000" in plain.output


def test_info_and_gc(tmp_path: Path) -> None:
    vec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": 3}}
    with mmstore.open(tmp_path / "s") as store:
        store.create_collection("v", encoders=vec).ingest([{"id": "a", "e": [1, 2, 3]}])
    info = json.loads(CliRunner().invoke(main, ["info", str(tmp_path / "s"), "v", "--json"]).output)
    assert info["fields"][0]["index"]["index_file_bytes"] > 0
    assert "bytes on disk" in CliRunner().invoke(main, ["info", str(tmp_path / "s"), "v"]).output
    gc = CliRunner().invoke(main, ["gc", str(tmp_path / "s"), "--dry-run", "--json"])
    assert gc.exit_code == 0 and json.loads(gc.output)["removed"] == 0


def test_a_store_held_by_a_service_is_named(tmp_path: Path) -> None:
    """Another process holds the store for writing and service.json names a service that
    does not answer: every verb that opens it names the service's address (one line, exit
    code 1); the read verbs tried that service first."""
    from mmstore.service.serve import SERVICE_FILE

    with mmstore.open(tmp_path / "s") as store:
        (store.path / SERVICE_FILE).write_text(
            json.dumps({"url": "http://127.0.0.1:8765", "pid": 1})
        )
        for args in (("collections", str(tmp_path / "s")), ("verify", str(tmp_path / "s"))):
            result = run(*args)
            assert result.returncode == 1
            assert "locked" in result.stderr
            assert "the mmstore service at http://127.0.0.1:8765 holds it" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1


def test_serve_holds_the_store_and_says_so(tmp_path: Path) -> None:
    """``mmstore serve`` in its own process: service.json names it while it runs, the CLI
        names it to a second process for a verb of the store itself (read verbs go through the
    service: tests/test_cli_service.py), writes go through HTTP, and on SIGINT the service closes
        the store and removes service.json."""
    import signal
    import time

    import httpx

    from tests.servers import free_port

    path = tmp_path / "s"
    mmstore.open(path).close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mmstore", "serve", str(path), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--no-auth", "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert json.loads((path / "service.json").read_text())["url"] == url
        held = run("verify", str(path))  # a verb of the store itself, not of the service
        assert held.returncode == 1 and f"the mmstore service at {url} holds it" in held.stderr
        through = run("collections", str(path))  # a read verb: through the service
        assert through.returncode == 0 and through.stdout == "\n", through.stderr
        vec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": 2}}
        r = httpx.post(f"{url}/collections", json={"name": "c", "encoders": vec})
        assert r.status_code == 201, r.text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert not (path / "service.json").exists()
    with mmstore.open(path, read_only=True) as store:
        assert store.collections() == ["c"]
