"""The sentence-transformers plugin with the real bundled all-MiniLM-L6-v2: conformance,
equality with the raw model, semantic search, and a fast failure for weights that are not
on this machine."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from mmstore_sbert import SentenceTransformerEncoder, load_model

import mmstore
from mmstore.testing import check_encoder

pytestmark = [pytest.mark.slow, pytest.mark.kernels]  # kernels: see the Makefile

SENTENCES = [
    "The cat sleeps on the warm windowsill.",
    "Stock markets fell sharply after the announcement.",
    "A recipe for fresh tomato soup with basil.",
    "The goalkeeper saved a penalty in the last minute.",
    "Quantum computers use qubits instead of bits.",
]


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder()


def test_conformance(encoder: SentenceTransformerEncoder) -> None:
    check_encoder(encoder, SENTENCES, "text")
    assert encoder.dim == 384


def test_vectors_equal_the_raw_model(encoder: SentenceTransformerEncoder) -> None:
    raw = load_model("all-MiniLM-L6-v2", "cpu").encode(SENTENCES, normalize_embeddings=True)
    assert np.allclose(encoder.encode(SENTENCES, "text"), raw, atol=1e-5)


def test_semantic_search_through_the_store(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("s", encoders={"text": "sentence_transformers"})
        col.ingest([{"id": str(i), "text": t} for i, t in enumerate(SENTENCES)])
        assert col.search(text="a kitten napping", k=1).ids == ["0"]
        assert col.search(text="football match", k=1).ids == ["3"]
        assert col.search(text="soup", k=1, where={"id": {"$ne": "2"}}).ids != ["2"]
        identity = col.spaces()[0]
        assert identity["params"] == {"model": "all-MiniLM-L6-v2", "dim": 384, "normalize": True}


def test_a_model_not_on_this_machine_fails_fast() -> None:
    import huggingface_hub  # noqa: F401  (imported first: the bound is on the lookup, not imports)

    start = time.perf_counter()
    with pytest.raises(mmstore.WeightsUnavailableError, match="downloads nothing") as err:
        SentenceTransformerEncoder(model="someone/not-cached-model", dim=8).encode(["x"], "text")
    assert time.perf_counter() - start < 5
    assert err.value.http_status == 503


def test_unknown_model_without_dim_is_a_config_error() -> None:
    with pytest.raises(mmstore.ConfigError, match="give dim="):
        SentenceTransformerEncoder(model="some/other-model")


def test_a_local_model_directory_works(tmp_path: Path) -> None:
    load_model("all-MiniLM-L6-v2", "cpu").save(str(tmp_path / "m"))
    local = SentenceTransformerEncoder(model=str(tmp_path / "m"), dim=384)
    default = SentenceTransformerEncoder()
    assert np.allclose(
        local.encode(SENTENCES[:2], "text"), default.encode(SENTENCES[:2], "text"), atol=1e-5
    )
    assert local.space() != default.space()  # another model name, another space
