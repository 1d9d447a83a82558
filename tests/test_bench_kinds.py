"""The index-kinds benchmark at a tiny size, so that it cannot rot: every kind built, its
raw FAISS baseline run beside it, and the table and JSON written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_kinds_smoke(tmp_path: Path) -> None:
    out = tmp_path / "kinds.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_kinds.py"),
            *("--n", "3000", "--threshold", "1000", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "batch / raw" in result.stdout and "load average" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["index"]["kind"] for r in rows] == ["flat", "hnsw", "ivf_sq8", "ivf_rabitq"]
    for r in rows:
        assert r["recall_at_10"] >= 0.9 and r["filtered_recall"] >= 0.9, r
        assert r["raw_p50_ms"] > 0 and r["batch_vs_raw"] > 0
