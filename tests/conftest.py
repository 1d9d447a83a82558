"""Shared fixtures: stores on real DuckDB files in a temporary folder, with the fake
deterministic text encoder registered; real models only where a test asks for them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mmstore
from mmstore.testing import FakePlugin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = [
    "apple",
    "banana",
    "cherry",
    "grape",
    "lemon",
    "mango",
    "orange",
    "peach",
    "pear",
    "plum",
    "red",
    "green",
    "blue",
    "yellow",
    "black",
    "white",
    "small",
    "large",
    "fresh",
    "dried",
]


def make_records(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Deterministic records: text of three words, a label, metadata with numbers."""
    out = []
    for i in range(start, start + n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3)]
        out.append(
            {
                "id": f"r{i}",
                "text": " ".join(words),
                "label": f"c{i % 5}",
                "meta": {"price": i % 100, "brand": ["acme", "zeta", "omni"][i % 3], "n": i},
            }
        )
    return out


@pytest.fixture(autouse=True)
def _fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """With MMSTORE_FAKE_GPU=1 every test runs the GPU search path on CPU tensors (how
    the GPU path is checked against the whole suite on a machine without one)."""
    if os.environ.get("MMSTORE_FAKE_GPU") == "1":
        from mmstore.index import gpu

        monkeypatch.setattr(gpu, "cuda_available", lambda: True)
        monkeypatch.setattr(gpu, "MIRROR_DEVICE", "cpu")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """End the run without the DuckDB bindings' spurious leak report at teardown, so that
    pytest's summary stays the last line (see mmstore.cli.exit)."""
    from mmstore.cli.exit import exit_quietly_at_exit

    exit_quietly_at_exit(int(exitstatus))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.mms"


@pytest.fixture
def store(store_path: Path) -> Iterator[mmstore.Store]:
    with mmstore.open(store_path, plugins=[FakePlugin()]) as s:
        yield s


@pytest.fixture
def col(store: mmstore.Store) -> mmstore.Collection:
    return store.create_collection("docs", encoders={"text": {"encoder": "hash_text", "dim": 64}})


@pytest.fixture
def vec_col(store: mmstore.Store) -> mmstore.Collection:
    return store.create_collection(
        "vecs", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": 16}}
    )


@pytest.fixture
def python() -> str:
    return sys.executable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``nightly`` tier is opt-in: skipped unless ``-m`` names it."""
    if "nightly" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="nightly tier: run with -m nightly")
    for item in items:
        if "nightly" in item.keywords:
            item.add_marker(skip)
