"""Every Python and shell example of the README and docs/ runs here, as written, on the tiny
models the tests use: a block's text is taken from the file (so an example that stops
working fails CI), with only its placeholders filled (the paths of weights and media, the
service's port and key), after a short setup that makes the names it assumes (``records``,
``wav_bytes``, ``my_vector``, ...).

``BLOCKS`` names what is done with each block; a block it does not name fails
``test_every_block_is_run_or_says_why_not``, and so does a block it names that is gone.
The ones not run say why (the install commands themselves, the network, a Ray cluster);
the README's command reference is checked against each command's ``--help``."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from mmstore_openclip.testing import random_encoder
from PIL import Image

import mmstore
from tests.servers import answers, free_port

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(python|sh|bash)\n(.*?)^```", re.M | re.S)
GEO = ROOT / "examples" / "mmstore-geo" / "src"

#: each block (file:line of its fence) and what happens to it: "run" (by a test below),
#: "reference" (the command list, checked against --help), or why it is not run
BLOCKS = {
    "README.md:13": "the README's two set-up commands: CI runs them (.ci/run)",
    "README.md:30": "run",
    "README.md:68": "run",
    "README.md:104": "run",
    "README.md:122": "run",
    "README.md:156": "run",
    "README.md:161": "run",
    "README.md:202": "reference",
    "docs/distributed.md:11": "pip install: the network",
    "docs/distributed.md:15": "a cluster at ray://head:10001 and s3://: not here (the local"
    " Ray ingest of its first line is tests/test_ray_ingest.py's)",
    "docs/distributed.md:26": "run",  # in tests/test_ray_ingest.py, beside its Ray cluster
    "docs/encryption.md:11": "pip install: the network",
    "docs/encryption.md:15": "run",
    "docs/heads-distributed.md:22": "run",
    "docs/heads-distributed.md:35": "run",  # in tests/test_heads_ray.py, beside its cluster
    "docs/plugins.md:50": "run",
    "docs/plugins.md:67": "run",
    "docs/plugins.md:193": "run",
    "docs/plugins.md:232": "run",
    "docs/plugins.md:274": "run",
    "docs/plugins.md:334": "run",
    "docs/scaling.md:210": "run",
}


def blocks() -> dict[str, str]:
    """Every python/sh block of README.md and docs/*.md, by file:line of its fence."""
    out = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out[f"{path.relative_to(ROOT)}:{line}"] = m.group(2)
    return out


def block(name: str, **fill: str) -> str:
    """A block's code with its placeholders replaced (each must occur)."""
    code = blocks()[name]
    for old, new in fill.items():
        assert old in code, f"{name} no longer holds {old!r}: update this test"
        code = code.replace(old, new)
    return code


def run(name: str, namespace: dict[str, Any], **fill: str) -> dict[str, Any]:
    exec(compile(block(name, **fill), name, "exec"), namespace)
    return namespace


def test_every_block_is_run_or_says_why_not() -> None:
    assert sorted(blocks()) == sorted(BLOCKS)


# -- helpers ---------------------------------------------------------------------------
def tone(freq: float, seconds: float = 0.5, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav(freq: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(freq), 16_000, format="WAV")
    return buf.getvalue()


def photo(seed: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.integers(-30, 30, (16, 16, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmstore", *args], cwd=cwd, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


# -- the README -------------------------------------------------------------------------
def test_readme_quick_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded quick start, on the bundled MiniLM and 384-d vectors."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    records = [
        {
            "id": f"sku-{i}",
            "text": ["red running shoe", "blue hat", "green scarf"][i % 3] + f" {i}",
            "emb": rng.normal(size=384).astype(np.float32),
            "meta": {"brand": ["acme", "zeta"][i % 2], "price": 10 * i},
        }
        for i in range(1, 9)
    ]
    ns = run(
        "README.md:30",
        {"records": records, "my_vector": rng.normal(size=384), "query_matrix": rng.normal(size=(3, 384))},
    )  # fmt: skip
    assert ns["report"].written == 8 and ns["report"].rejected == []
    assert [h.id for h in ns["hits"]] and len(ns["batches"]) == 3


def test_readme_media_reembed_heads_and_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The media, re-embedding and heads blocks in one store, then the service blocks over
    it: ``mmstore keys create``, ``mmstore serve`` in its own process, and the client."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    (data / "audio").mkdir()
    (data / "photos" / "1.jpg").write_bytes(photo(1, "JPEG"))
    tiny = json.dumps(random_encoder(tmp_path / "tiny", "mms-tiny-docs"))
    newer = random_encoder(tmp_path / "tiny", "mms-tiny-docs", seed=1)["pretrained"]
    clip_line = (
        'clip = {"encoder": "open_clip", "model": "ViT-B-32", '
        '"pretrained": "/models/vit-b-32.safetensors"}'
    )
    store = mmstore.open("catalog.mms")
    ns: dict[str, Any] = {
        "store": store,
        "wav_bytes": wav(440),
        "pil_image": Image.open(io.BytesIO(photo(2))),
        "photo_bytes": photo(3),
    }
    try:
        with pytest.raises(mmstore.SpaceMismatchError, match="retrieval head"):  # its last
            run("README.md:68", ns, **{clip_line: f"clip = {tiny}", '"/data/': f'"{data}/'})
        assert len(ns["col"]) == 1  # every line before the last ran
        run("README.md:104", ns, **{"/models/newer.safetensors": newer})
        assert ns["report"].switched and ns["report"].encoded == 1
        _labelled_products(ns["col"], store)
        run("README.md:122", ns)
        assert ns["clf"].kind == "classifier" and ns["ret"].kind == "retrieval"
    finally:
        store.close()
    _readme_service(tmp_path, _labelled(0, 1)[:3])


def _labelled(start: int, n: int = 24) -> list[dict[str, Any]]:
    return [
        {
            "id": f"p{i}",
            "label": ["shoe", "hat"][i % 2],
            "image": photo(10 + i % 2 * 50 + i),
            "caption": ["a red shoe", "a blue hat"][i % 2],
            "audio": wav(300.0 + 400 * (i % 2) + i),
            "specs": {"price": 10 + i, "weight": 0.5 + i % 2, "brand": ["acme", "omni"][i % 2]},
        }
        for i in range(start, start + n)
    ]


def _labelled_products(col: mmstore.Collection, store: mmstore.Store) -> None:
    """What the heads block assumes: labelled records, and two streams to align."""
    col.ingest(_labelled(0))
    vec = {"encoder": "precomputed", "modality": "vector", "dim": 4}
    for name, offset in (("clicks", 0), ("frames", 50)):
        stream = store.create_collection(name, encoders={"emb": vec})
        stream.ingest(
            [
                {"id": f"{name}{i}", "emb": [1.0, i, 0, 0], "ts": f"2024-01-01T00:00:0{i}.{offset}",
                 "meta": {"camera": f"cam{i % 2}"}}
                for i in range(6)
            ]
        )  # fmt: skip


def _readme_service(folder: Path, records: list[dict[str, Any]]) -> None:
    keys = cli(*block("README.md:156").splitlines()[0].split()[1:], "--json", cwd=folder)
    assert keys.returncode == 0, keys.stderr
    token = json.loads(keys.stdout)["token"]
    serve = block("README.md:156").splitlines()[1].split("#")[0].split()[1:]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmstore", *serve, "--port", str(port), "--log-level", "warning"],
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not answers(url):
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        for r in records:
            r["id"] = "new-" + r["id"]
        run(
            "README.md:161",
            {"mmstore": mmstore, "records": records},
            **{"http://127.0.0.1:8765": url, "mms_k_...": token},
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_readme_command_reference_matches_the_cli() -> None:
    """Each ``mmstore VERB ...`` entry of the reference (with its indented continuation
    lines, comments left out) names a command whose --help has every option it shows."""
    from click.testing import CliRunner

    from mmstore.cli.main import cli as main

    entries: list[str] = []
    for line in block("README.md:202").splitlines():
        text = line.split("#")[0]
        if line.startswith("mmstore "):
            entries.append(text)
        elif line.startswith(" ") and entries:
            entries[-1] += text
    assert len(entries) >= 20
    for entry in entries:
        verb = entry.split()[1]
        words = [verb, "create"] if verb == "keys" else [verb]  # keys create|list|revoke
        shown = CliRunner().invoke(main, [*words, "--help"])
        assert shown.exit_code == 0, (verb, shown.output)
        for option in re.findall(r"--[a-z][a-z-]*", entry):
            assert option in shown.output, (verb, option)


# -- docs/ --------------------------------------------------------------------------------
def test_encryption_example_says_what_to_install(tmp_path: Path) -> None:
    """Without DuckDB's httpfs extension (none on PyPI yet for DuckDB 2), opening with a key
    refuses, naming the package; with it, the store is created encrypted."""
    os.chdir(tmp_path)
    try:
        ns: dict[str, Any] = {"key": "k" * 32}
        if importlib.util.find_spec("duckdb_extension_httpfs") is None:
            with pytest.raises(mmstore.EncryptionUnavailableError, match="duckdb-extension-httpfs"):
                run("docs/encryption.md:15", ns)
        else:  # pragma: no cover - where the extension is installed
            run("docs/encryption.md:15", ns)
            ns["store"].close()
    finally:
        os.chdir(ROOT)


def test_scaling_example_ingests_a_table_as_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chdir(tmp_path)
    try:
        ns = run("docs/scaling.md:210", {})
        assert capsys.readouterr().out.split() == ["1000", "2000000000"]
        assert ns["report"].rejected == []
    finally:
        os.chdir(ROOT)


def vector_products(n: int = 60) -> list[dict[str, Any]]:
    """Labelled records whose ``image`` and ``text`` fields hold 4-d vectors (separable)."""
    rng = np.random.default_rng(0)
    return [
        {"id": f"r{i}", "label": f"k{i % 2}",
         "image": (np.eye(4)[i % 2] + 0.1 * rng.random(4)).tolist(),
         "text": (np.eye(4)[2 + i % 2] + 0.1 * rng.random(4)).tolist()}
        for i in range(n)
    ]  # fmt: skip


def products_of_vectors(path: Path, ingest: bool = True) -> None:
    """The docs' ``catalog.mms`` with collection ``products`` of two vector fields."""
    vec = {"encoder": "precomputed", "modality": "vector", "dim": 4}
    with mmstore.open(path) as store:
        col = store.create_collection("products", encoders={"image": vec, "text": vec})
        if ingest:
            col.ingest(vector_products())


def test_torchrun_example_trains_a_head(tmp_path: Path) -> None:
    """The torchrun command of docs/heads-distributed.md, two CPU ranks, on a store whose
    ``image`` and ``text`` fields hold vectors."""
    products_of_vectors(tmp_path / "catalog.mms")
    command = block("docs/heads-distributed.md:22", **{"--epochs 100": "--epochs 5"})
    args = command.replace("\\\n", " ").split()
    assert args[0] == "torchrun"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--master-port", str(free_port())]
    done = subprocess.run(
        [*launcher, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with mmstore.open(tmp_path / "catalog.mms", read_only=True) as store:
        assert [h["name"] for h in store.collection("products").heads()] == ["category"]


@pytest.fixture
def geo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example plugin, imported from its source folder and forgotten afterwards (so
    that test_example_plugin imports it from where it installs it)."""

    def forget() -> None:
        for name in [m for m in sys.modules if m.split(".")[0] == "mmstore_geo"]:
            del sys.modules[name]

    forget()
    monkeypatch.syspath_prepend(str(GEO))
    import mmstore_geo

    yield mmstore_geo
    forget()


def test_plugin_guide_examples(tmp_path: Path, geo: Any) -> None:
    """docs/plugins.md: the encoder and the two modalities as written, registered in a
    store; the geo example's collections; and its test file, run."""
    chars = run("docs/plugins.md:67", {})
    points = run("docs/plugins.md:193", {})
    blob = run("docs/plugins.md:274", {"Any": Any, "plugin": mmstore.plugin})

    class Hooks:  # the guide's encoder hook as written, and one for the Blob modality
        mmstore_register_encoders = staticmethod(chars["mmstore_register_encoders"])

        @mmstore.hookimpl
        def mmstore_register_modalities(self) -> list[type[mmstore.Modality]]:
            return [blob["Blob"]]

    hooks = Hooks()
    with mmstore.open(tmp_path / "s", plugins=[hooks, geo], entrypoints=False) as store:
        col = store.create_collection("notes", encoders={"text": {"encoder": "chars", "dim": 16}})
        col.ingest([{"id": "a", "text": "abc"}, {"id": "b", "text": "xyz"}])
        assert col.search(text="abc", k=1)[0].id == "a"
        run("docs/plugins.md:50", {"store": store})
        run("docs/plugins.md:232", {"store": store})
        assert {"cities", "shapes"} <= set(store.collections())
        modality = blob["Blob"](media=store.media)
        assert modality.from_source(modality.to_source(b"data")) == b"data"
    assert points["GeoPointModality"].name == "geopoint"
    tests = run("docs/plugins.md:334", {})
    tests["test_modality_passes_the_conformance_kit"]()
    tests["test_encoder_passes_the_conformance_kit"]()
    tests["test_bad_point_is_rejected_naming_the_record"](tmp_path / "geo")
