"""``mmstore ingest STORE COLLECTION FOLDER``: a folder of images and audio files, one
record per file (id = relative path without suffix), each file to the field whose modality
claims its suffix, with a sidecar of labels and metadata.

Bad inputs tried: a corrupt WAV (exit 1, the record named, nothing written; --skip-bad
writes the rest and lists it), a sidecar row naming no file, a sidecar row without an id,
two files with one id, a folder whose suffixes fit two fields without --field, --field of a
field that takes no files, --sidecar with a file source, a CSV id of "007" (kept a string).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mmstore_openclip.testing import random_encoder
from PIL import Image

import mmstore
from mmstore.cli.main import cli
from tests.test_image import TINY
from tests.test_service import wav


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return random_encoder(tmp_path_factory.mktemp("tiny"), TINY) | {"modality": "image"}


@pytest.fixture
def store(tmp_path: Path, clip: dict[str, Any]) -> Path:
    path = tmp_path / "s"
    with mmstore.open(path) as s:
        s.create_collection(
            "media", encoders={"photo": clip, "sound": {"encoder": "logmel", "modality": "audio"}}
        )
        s.create_collection("two", encoders={"a": clip, "b": clip})
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "birds").mkdir(parents=True)
    (root / "red.png").write_bytes(png((255, 0, 0)))
    (root / "birds" / "blue.PNG").write_bytes(png((0, 0, 255)))
    (root / "007.png").write_bytes(png((0, 255, 0)))
    (root / "hum.wav").write_bytes(wav(220))
    (root / "birds" / "song.flac").write_bytes(wav(2000))  # WAV bytes, read by content
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden.png").write_bytes(png((1, 1, 1)))
    (root / "labels.csv").write_text(
        "id,label,site,count\nred,warm,north,3\nbirds/blue,cold,south,4\n007,green,east,1\n"
    )
    return root


def ingest(*args: str) -> Any:
    return CliRunner().invoke(cli, ["ingest", *args, "--no-progress"])


def test_folder_with_sidecar(store: Path, folder: Path) -> None:
    result = ingest(str(store), "media", str(folder), "--sidecar", str(folder / "labels.csv"))
    assert result.exit_code == 0, result.output
    assert "5 written" in result.output and "2 files ignored" in result.output  # txt, csv
    with mmstore.open(store, read_only=True) as s:
        col = s.collection("media")
        assert len(col) == 5
        got = {r["id"]: r for r in col.get(["red", "birds/blue", "007", "hum", "birds/song"])}
        assert got["birds/blue"]["label"] == "cold"
        assert got["birds/blue"]["meta"] == {"site": "south", "count": 4}
        assert got["007"]["label"] == "green"  # "007" stayed a string id
        assert "photo" in got["red"] and "sound" not in got["red"]
        assert got["hum"]["sound"]["sample_rate"] == 16_000 and "photo" not in got["hum"]
        # the image found by an image of the same colour, the tone by the same tone
        assert col.search(photo=png((0, 0, 250)), k=1).ids == ["birds/blue"]
        assert col.search(sound=wav(2000), k=1).ids == ["birds/song"]
    side = ("--sidecar", str(folder / "labels.csv"))
    again = ingest(str(store), "media", str(folder), *side, "--json")
    assert json.loads(again.output)["unchanged"] == 5


def test_bad_file_fails_the_ingest_and_skip_bad_lists_it(store: Path, folder: Path) -> None:
    (folder / "broken.wav").write_bytes(wav(300)[:60])
    result = ingest(str(store), "media", str(folder))
    assert result.exit_code == 1 and "'broken'" in result.output and "'sound'" in result.output
    with mmstore.open(store, read_only=True) as s:
        assert len(s.collection("media")) == 0
    result = ingest(str(store), "media", str(folder), "--skip-bad", "--json")
    report = json.loads(result.output)
    assert report["written"] == 5 and report["ignored"] == 2
    assert [r.split()[0] for r in report["rejected"]] == ["broken"]


def test_sidecar_problems(store: Path, folder: Path, tmp_path: Path) -> None:
    side = tmp_path / "side.jsonl"
    rows = [{"id": "red", "label": "x"}, {"id": "ghost", "label": "y"}, {"label": "no id"}]
    side.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = ingest(str(store), "media", str(folder), "--sidecar", str(side))
    assert result.exit_code == 1 and "row 3 has no id" in result.output
    result = ingest(str(store), "media", str(folder), "--sidecar", str(side), "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "row 3 has no id" in result.output and "'ghost' names no file" in result.output
    with mmstore.open(store, read_only=True) as s:
        assert s.collection("media").get(["red"])[0]["label"] == "x"


def test_folder_argument_errors(store: Path, folder: Path) -> None:
    (folder / "red.jpg").write_bytes(png((250, 0, 0)))
    same = ingest(str(store), "media", str(folder))
    assert same.exit_code == 1 and "same id 'red'" in same.output
    (folder / "red.jpg").unlink()
    two = ingest(str(store), "two", str(folder))
    assert two.exit_code == 1 and "choose one with --field" in two.output
    # the suffix of the folder's own files, not the first one the modality claims
    assert "ends in .png" in two.output and ".jpg" not in two.output, two.output
    chosen = ingest(str(store), "two", str(folder), "--field", "b", "--json")
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.output)["written"] == 3  # the PNGs; the audio files ignored
    wrong = ingest(str(store), "media", str(folder), "--field", "nope")
    assert wrong.exit_code == 1 and "no such field" in wrong.output
    csv = folder / "labels.csv"
    mixed = ingest(str(store), "media", str(csv), "--sidecar", str(csv))
    assert mixed.exit_code == 1 and "go with a folder" in mixed.output
