"""The peers' virtual environments: Chroma, LanceDB and DuckDB with ``vss`` at pinned
versions (``requirements.txt`` beside this file), apart from this project's environment
because their dependencies differ from it (DuckDB 1.5 for the extension); Pixeltable in one
of its own (``requirements-pixeltable.txt``: its pins of numpy, pandas and SQLAlchemy are its
own). Created on first use with ``venv`` and pip; recreated when the pins change."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
PIXELTABLE = Path(__file__).resolve().parent / "requirements-pixeltable.txt"
STAMP = ".peers-installed"
INSTALL_TIMEOUT_S = 1200


def ensure(
    path: Path, setup: bool, requirements: Path = REQUIREMENTS, label: str = "peers"
) -> tuple[Path | None, str]:
    """The environment's python, or None and why it is not there."""
    python = path / "bin" / "python"
    wanted = requirements.read_text()
    stamp = path / STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python, ""
    if not setup:
        return None, f"no {label} environment at {path} (the command without --no-setup makes it)"
    print(f"creating the {label} environment at {path} (pinned in {requirements.name})", flush=True)
    t0 = time.perf_counter()
    shutil.rmtree(path, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(path)],
        [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(cmd[:4])} ...` took over {INSTALL_TIMEOUT_S} s"
        if done.returncode:
            lines = [x for x in done.stderr.splitlines() if x.strip() and "is ignored" not in x]
            tail = " ".join(lines[-3:])
            return None, f"`{' '.join(cmd[:4])} ...` failed: {tail}"
    stamp.write_text(wanted)
    print(f"{label} environment ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return python, ""
