"""Figures the reliability tests produced, kept in ``benchmarks/out/reliability.json``
(git ignores it) so that ``python -m tests.reliability.report`` can write the table of
docs/reliability.md from the last run. A figure is recorded only once its test's
assertions have passed, so a recorded figure is one the suite checked."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "out" / "reliability.json"
_lock = threading.Lock()


def load() -> dict[str, Any]:
    try:
        data = json.loads(FILE.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(figure: str, test: str, result: str) -> None:
    """Record what ``test`` showed for ``figure`` (an id of RELIABILITY.md, e.g. "R1")."""
    with _lock:
        data = load()
        data.setdefault(figure, {})[test] = {
            "result": result,
            "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        FILE.parent.mkdir(parents=True, exist_ok=True)
        tmp = FILE.with_name(f".{FILE.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, FILE)
