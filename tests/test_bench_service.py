"""The service load test at the smoke size, so that it cannot rot: it builds a store,
serves it in a child process, runs both phases with 2 clients and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_service_smoke(tmp_path: Path) -> None:
    out = tmp_path / "service.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_service.py"),
            *("--vectors", "1500", "--requests", "120", "--clients", "2"),
            *("--deadline", "60", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ratio HTTP/API" in result.stdout
    data = json.loads(out.read_text())
    assert data["vectors"] == 1500 and data["clients"] == 2
    for phase in ("unfiltered", "filtered"):
        assert data["http"][phase]["completed"] is True
        assert data["http"][phase]["requests"] == 120
        assert data["api"][phase]["req_per_s"] > 0
