"""The peer comparison (``benchmarks/peers``) at its smoke size, so that it cannot rot:
mmstore, raw FAISS and DuckDB brute force run in their own processes on both data sets,
the peers whose environment is absent are skipped with the reason, exact systems find
exactly the exact answers, and the RESULTS.md section is regenerated in place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAIN_ENV = ("mmstore", "mmstore-flat", "faiss-flat", "faiss-ivf", "faiss-hnsw", "duckdb-brute")
EXACT = ("mmstore-flat", "faiss-flat", "duckdb-brute")
PEERS = ("duckdb-vss", "chroma", "lancedb-flat", "lancedb-ivfpq")
OLD_SECTION = """# Benchmark results

## Earlier

kept above

## Peers (issue 7)

<!-- peers:begin (old) -->
old table
<!-- peers:end -->

Reading written by hand, kept.
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, str]:
    tmp = tmp_path_factory.mktemp("peers")
    out, results = tmp / "peers.json", tmp / "RESULTS.md"
    results.write_text(OLD_SECTION)
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "benchmarks" / "peers"), "--tiny", "--no-setup"),
            *("--peers-venv", str(tmp / "absent-venv"), "--out", str(out)),
            *("--results", str(results)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text()), results.read_text()


@pytest.mark.slow
def test_each_system_of_this_environment_measured_on_both_data_sets(run) -> None:
    stdout, data, _ = run
    for name in ("random", "real"):
        assert data["datasets"][name]["selectivity"] == pytest.approx(0.1)
        for system in MAIN_ENV:
            r = data["runs"][name][system]
            assert r["done"] and r["rc"] == 0, (name, system, r)
            assert r["ingest"]["vectors_per_s"] > 0
            assert r["search"]["queries"] > 0 and 0 < r["search"]["p50_ms"] <= r["search"]["p99_ms"]
            assert r["batch"]["qps"] > 0 and r["filtered"]["queries"] > 0
            assert r["peak_rss_mb"] > 0 and r["reopen"]["s"] > 0
            assert f"| {system} |" in stdout


@pytest.mark.slow
def test_exact_systems_find_the_exact_answers(run) -> None:
    _, data, _ = run
    for name in ("random", "real"):
        for system in EXACT:
            r = data["runs"][name][system]
            assert r["search"]["recall"] == 1.0, (name, system)
            assert r["batch"].get("recall", 1.0) == 1.0, (name, system)  # loops: no batch call
            assert r["filtered"]["recall"] == 1.0, (name, system)
            assert r["reopen"]["recall_first"] == 1.0, (name, system)
        assert data["runs"][name]["faiss-flat"]["batch"]["recall"] == 1.0
        hnsw = data["runs"][name]["faiss-hnsw"]
        assert hnsw["tune"]["reached"] and hnsw["tune"]["tune_recall"] >= 0.95


@pytest.mark.slow
def test_peers_without_their_environment_are_skipped_with_the_reason(run) -> None:
    stdout, data, _ = run
    for name in ("random", "real"):
        for system in PEERS:
            assert "no peers environment" in data["runs"][name][system]["skipped"]
    assert "Skipped: duckdb-vss (no peers environment" in stdout
    assert "skipped" in data["text"]["chroma"] and "skipped" in data["text"]["lancedb"]


@pytest.mark.slow
def test_text_ingest_end_to_end(run) -> None:
    _, data, _ = run
    text = data["text"]["mmstore"]
    assert text["texts"] == 48 and text["texts_per_s"] > 0 and text["raw_texts_per_s"] > 0
    assert text["self_top1"] is True


@pytest.mark.slow
def test_results_section_regenerated_in_place(run) -> None:
    _, _, md = run
    assert "old table" not in md
    assert "kept above" in md and md.rstrip().endswith("Reading written by hand, kept.")
    assert md.count("## Peers (issue 7)") == 1 and "| faiss-hnsw |" in md
    assert "Machine: " in md and "Versions: main: " in md
