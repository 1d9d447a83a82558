"""The scaling benchmark at tiny sizes, so that it cannot rot: each size in its own process,
the table, the fitted slopes, the reopen beside its bare baseline and the JSON it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_scaling_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_scaling.py"),
            *("--sizes", "500,2000", "--index", '{"ann_threshold": 1000}', "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fitted growth" in result.stdout and "load average" in result.stdout
    data = json.loads(out.read_text())
    assert [r["n"] for r in data["rows"]] == [500, 2000]
    small, large = data["rows"]
    assert small["index"]["kind"] == "flat" and large["index"]["kind"] == "hnsw"
    assert large["recall_at_10"] >= 0.9 and large["index_file_bytes"] > 2000 * 384 * 4
    assert all(r["reopen_s"] > 0 and r["bare_reopen_s"] > 0 for r in data["rows"])
    assert all(r["serving_rss_mb"] > 0 for r in data["rows"])
    assert set(data["slopes"]) >= {"ingest_s", "optimize_s", "search_p50_ms", "peak_rss_mb"}
