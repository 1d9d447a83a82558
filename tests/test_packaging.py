"""Packaging: the wheel carries every module, the Alembic migrations, the built-in plugins
and their entry points, so that an installed mmstore can create and upgrade a store; and
every extra resolves."""

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
    modules = {n for n in filter(None, tracked) if n.startswith("mmstore/") and n.endswith(".py")}
    assert modules - names == set()  # every package of the layout is listed in pyproject
    from mmstore.plugin.manager import BUILTINS

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
    assert "mmstore = mmstore.cli.main:main" in text


def _extras() -> dict[str, list[str]]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["optional-dependencies"])


def test_extras_are_those_the_docs_name() -> None:
    assert sorted(_extras()) == ["pandas", "ray", "test"]


@pytest.mark.parametrize("extra", sorted(_extras()))
def test_every_extra_resolves(extra: str, tmp_path: Path) -> None:
    """``pip install 'mmstore[EXTRA]'`` finds a version of every requirement (pip's own
    resolver, dry run: what is installed and fits counts, the rest is looked up on the
    index)."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-build-isolation",
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[{extra}]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert report.is_file()
