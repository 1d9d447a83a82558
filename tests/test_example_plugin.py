"""The example third-party plugin (examples/mmstore-geo), installed with pip the way a user
installs it, found through its ``mmstore`` entry point, used by ingest and search, and
passing its own tests, which run mmstore's conformance kit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmstore
from mmstore.cli.main import cli as main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mmstore-geo"
PLACE = {"place": {"encoder": "geo", "modality": "geopoint"}}
CITIES = [
    {"id": "paris", "place": {"lat": 48.8566, "lon": 2.3522}},
    {"id": "london", "place": {"lat": 51.5074, "lon": -0.1278}},
    {"id": "berlin", "place": {"lat": 52.5200, "lon": 13.4050}},
    {"id": "madrid", "place": (40.4168, -3.7038)},
    {"id": "new_york", "place": (40.7128, -74.0060)},
    {"id": "sydney", "place": (-33.8688, 151.2093)},
]


def run(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; fail the test with its output if it fails."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example, so that building it leaves nothing in the checkout."""
    copy = tmp_path_factory.mktemp("example") / "mmstore-geo"
    skip = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(EXAMPLE, copy, ignore=skip)
    return copy


@pytest.fixture(scope="module")
def installed(example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example pip-installed (offline, no dependencies) into its own folder."""
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    run([*pip, *offline, "--target", str(target), str(example)])
    return target


@pytest.fixture
def geo_site(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The install folder on sys.path (as site-packages would be), removed afterwards."""
    monkeypatch.syspath_prepend(str(installed))  # also invalidates the import caches
    yield installed
    sys.modules.pop("mmstore_geo", None)


def test_installed_plugin_is_found_through_its_entry_point(geo_site: Path, tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as store:
        info = {i.name: i for i in store.plugins.infos()}["geo"]
        assert (info.version, info.source) == ("0.1.0", "entrypoint")
        assert {"mmstore_register_encoders", "mmstore_register_modalities"} <= set(info.hooks)
        assert store.plugins.owner("encoder", "geo") == "geo"
        assert store.plugins.owner("modality", "geopoint") == "geo"
    assert Path(sys.modules["mmstore_geo"].__file__ or "").is_relative_to(geo_site)


def test_search_near_paris_finds_paris_then_london(geo_site: Path, tmp_path: Path) -> None:
    from mmstore_geo import distance_km

    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("cities", encoders=PLACE)
        col.ingest(CITIES)
        hits = col.search(place={"lat": 48.85, "lon": 2.35}, k=3)
        assert hits.ids == ["paris", "london", "berlin"]
        assert distance_km(hits[1].score) == pytest.approx(343.5, abs=2.5)  # Paris-London
        assert (col.spaces()[0]["plugin"], col.spaces()[0]["plugin_version"]) == ("geo", "0.1.0")


def test_point_out_of_range_is_refused_naming_the_record(geo_site: Path, tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("cities", encoders=PLACE)
        atlantis = {"id": "atlantis", "place": {"lat": 100, "lon": -30}}
        with pytest.raises(mmstore.RecordError, match="'atlantis'.*lat 100") as err:
            col.ingest([*CITIES[:2], atlantis])
        assert (err.value.record_id, err.value.field) == ("atlantis", "place")
        assert len(col) == 0


def test_mmstore_plugins_lists_the_installed_plugin(geo_site: Path) -> None:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {p["name"]: p["version"] for p in data["plugins"]}["geo"] == "0.1.0"
    assert (data["encoders"]["geo"], data["modalities"]["geopoint"]) == ("geo", "geo")


def test_example_passes_its_own_tests_against_the_installed_package(
    example: Path, installed: Path
) -> None:
    path = [str(installed), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(path)}
    pytest_args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    done = run(pytest_args, cwd=example, env=env)
    assert " passed" in done.stdout and "skipped" not in done.stdout
