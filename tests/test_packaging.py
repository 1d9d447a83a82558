"""Packaging: the wheel carries the Alembic migrations, the built-in plugins and their entry
points, so that an installed mmstore can create and upgrade a store."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_migrations_plugins_and_entry_points(tmp_path: Path) -> None:
    # build from a copy of the tracked files: a stale build/ folder must not fill gaps
    source = tmp_path / "src"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("mmstore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mmstore/_migrations/env.py" in names
    assert "mmstore/_migrations/script.py.mako" in names
    assert "mmstore/_migrations/versions/0001_initial.py" in names
    assert "mmstore/_migrations/versions/0002_encoder_states.py" in names
    assert "mmstore/py.typed" in names
    assert "mmstore/heads/__init__.py" in names and "mmstore/heads/retrieval.py" in names
    from mmstore.plugins import BUILTINS

    for _, plugin in BUILTINS:
        assert f"{plugin}/__init__.py" in names
    for module in (
        "mmstore_image/checks.py",
        "mmstore_openclip/weights.py",
        "mmstore_audio/features.py",
        "mmstore_tabular/encoder.py",
    ):
        assert module in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[mmstore]" in text and "sentence_transformers = mmstore_sbert" in text
    assert "mmstore = mmstore.cli:main" in text
