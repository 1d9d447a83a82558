"""Issue 18's index kinds on real all-MiniLM-L6-v2 vectors of docstrings: the HNSW graph,
IVF with 8-bit codes and IVF with RaBitQ codes, each against an exact search at its tuned
width (fresh queries, filters, tombstones, exact scores from float32 rescoring), a byte-exact
round trip through the index file; and the choice made before building, from the field's
size, its dimension and a memory budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mmstore
from mmstore.config import IndexOptions
from mmstore.errors import ConfigError
from mmstore.index import choose
from mmstore.index import file as indexfile
from mmstore.index.vectors import VectorIndex

pytestmark = [pytest.mark.slow, pytest.mark.kernels]
N_BASE, N_QUERIES, K = 1800, 200, 10


@pytest.fixture(scope="module")
def minilm() -> tuple[np.ndarray, np.ndarray]:
    """Docstring embeddings: 1,800 to index and 200 other texts as queries."""
    from mmstore_sbert import SentenceTransformerEncoder

    from mmstore.corpus import docstrings

    texts = [" ".join(r["text"].split()[:16]) for r in docstrings(2200)]
    texts = list(dict.fromkeys(texts))[: N_BASE + N_QUERIES]
    vectors = SentenceTransformerEncoder().encode(texts, "text")
    return vectors[:N_BASE], vectors[N_BASE:]


def exact(x: np.ndarray, q: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    scores = q @ x.T
    if keep is not None:
        scores[:, ~keep] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :K] + 1  # vids are 1-based


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(t)) / K for g, t in zip(got, truth, strict=True)]))


def built(kind: str, x: np.ndarray) -> VectorIndex:
    index = VectorIndex(x.shape[1], IndexOptions(ann_threshold=500, kind=kind))  # type: ignore[arg-type]
    index.add(np.arange(1, len(x) + 1), x)
    index.optimize()
    return index


@pytest.mark.parametrize("kind", ["hnsw", "ivf_sq8", "ivf_rabitq"])
def test_each_kind_against_exact_search(minilm: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    x, q = minilm
    index = built(kind, x)
    assert index.kind == kind and index.serves_graph
    assert index.tuned_recall is not None and index.tuned_recall >= 0.95
    result = index.search(q, K)
    assert recall(result.vids, exact(x, q)) >= 0.93  # fresh queries, the tuned width
    hit_vectors = x[result.vids - 1]  # the scores are exact inner products (rescored)
    assert np.allclose(result.scores, np.einsum("qd,qkd->qk", q, hit_vectors), atol=1e-5)
    dead = np.arange(1, 301)
    index.remove(dead)
    allowed = np.arange(1, N_BASE + 1)[::7]  # a selective filter: exact
    keep = np.isin(np.arange(1, N_BASE + 1), allowed) & ~np.isin(np.arange(1, N_BASE + 1), dead)
    filtered = index.search(q, K, allowed)
    assert np.array_equal(filtered.vids, exact(x, q, keep))
    unfiltered = index.search(q, K).vids
    assert not np.isin(unfiltered, dead).any()
    live = ~np.isin(np.arange(1, N_BASE + 1), dead)
    assert recall(unfiltered, exact(x, q, live)) >= 0.9


@pytest.mark.parametrize("kind", ["ivf_sq8", "ivf_rabitq"])
def test_an_ivf_index_round_trips_through_its_file(
    minilm: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    x, q = minilm
    index = built(kind, x[:1500])
    index.add(np.arange(1501, N_BASE + 1), x[1500:])  # a tail, searched exactly
    index.remove(np.array([3, 4, 1600]))
    again = indexfile.load(b"".join(bytes(c) for c in indexfile.dump(index)), index.options)
    a, b = index.search(q, K), again.search(q, K)
    assert np.array_equal(a.vids, b.vids) and np.array_equal(a.scores, b.scores)
    assert again.params() == index.params()
    assert again.kind == kind and again.decision == index.decision


def test_the_candidate_follows_size_dimension_and_memory() -> None:
    auto = IndexOptions(graph_limit=100_000, memory="4GB")
    assert choose.candidate(auto, 50_000, 384)[0] == "hnsw"
    assert choose.candidate(auto, 1_000_000, 384)[0] == "ivf_sq8"  # 1.5 GB floats + codes
    assert choose.candidate(auto, 4_000_000, 384)[0] == "ivf_rabitq"  # 6.1 GB floats
    small = IndexOptions(memory="100MB")
    assert choose.candidate(small, 100_000, 384)[0] == "ivf_rabitq"  # no graph if it won't fit
    assert choose.candidate(IndexOptions(kind="ivf_sq8"), 10, 8) == (
        "ivf_sq8",
        "kind 'ivf_sq8' was asked for",
    )
    assert choose.budget(IndexOptions()) > 0


def test_a_grown_field_is_decided_again(minilm: tuple[np.ndarray, np.ndarray]) -> None:
    """A graph past graph_limit becomes an IVF index once the field has grown 4x past the
    size it was decided at; every vector is still found."""
    x, q = minilm
    options = IndexOptions(ann_threshold=300, graph_limit=400)
    index = VectorIndex(384, options)
    index.add(np.arange(1, 401), x[:400])
    index.optimize()
    assert index.kind == "hnsw" and index.decision is not None
    assert index.decision.decided_at == 400
    index.add(np.arange(401, N_BASE + 1), x[400:])
    index.optimize()
    assert index.kind == "ivf_sq8" and index.decision.decided_at == N_BASE
    assert index.n_base == N_BASE and index.live == N_BASE
    assert recall(index.search(q, K).vids, exact(x, q)) >= 0.9


def test_the_collection_reports_its_choice(
    tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = minilm
    spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": 384}}
    with mmstore.open(tmp_path / "s") as store:
        col = store.create_collection("v", encoders=spec, index={"ann_threshold": 500})
        col.ingest([{"id": f"r{i}", "e": v} for i, v in enumerate(x)])
        col.optimize()
        info = col.info()["fields"][0]["index"]
    assert info["kind"] == "hnsw" and info["decision"]["kind"] == "hnsw"
    assert info["decision"]["sample_recall"] >= 0.95 and info["tuned_recall@10"] >= 0.95
    assert "graph_limit" in info["decision"]["reason"]
    with mmstore.open(tmp_path / "s") as store:  # the choice comes back with the file
        again = store.collection("v").info()["fields"][0]["index"]
    assert again["decision"] == info["decision"]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"memory": "2 parsecs"}, "memory"),
        ({"memory": -5}, "memory"),
        ({"kind": "ivf_pq"}, "kind"),
        ({"graph_limit": 0}, "graph_limit"),
    ],
)
def test_bad_index_options_are_refused_by_name(
    tmp_path: Path, options: dict[str, object], named: str
) -> None:
    spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
    with mmstore.open(tmp_path / "s") as store:
        with pytest.raises(ConfigError, match=named):
            store.create_collection("v", encoders=spec, index=options)
        assert store.collections() == []
