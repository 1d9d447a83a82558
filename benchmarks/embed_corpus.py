"""Embed real docstrings found on this machine with the bundled all-MiniLM-L6-v2, once, and
cache the vectors under benchmarks/out/ (ignored by git): the real 384-d vectors that the
vector benchmarks index and query. Texts are cut to their first 16 words (a sentence or
so), which keeps encoding 100,000 of them to about 20 minutes on 2 cores."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from mmstore.corpus import docstrings

OUT = Path(__file__).resolve().parent / "out"


def cached_embeddings(n: int, words: int = 16) -> tuple[list[dict[str, str]], np.ndarray]:
    """``n`` docstring records and their normalized embeddings, computed once. Texts are
    unique after the cut (paragraphs that start alike would otherwise give identical
    vectors, and a tie at the k-th place is broken differently by each system)."""
    records = unique_cut(docstrings(n + n // 10 + 100, paragraphs=3), words)[:n]
    key = hashlib.sha256(json.dumps([r["text"] for r in records]).encode()).hexdigest()[:12]
    path = OUT / f"minilm-{len(records)}-{key}.npy"
    if path.exists():
        return records, np.load(path, allow_pickle=False)
    from mmstore_sbert import load_model

    model = load_model("all-MiniLM-L6-v2", "cpu")
    start = time.perf_counter()
    vectors = model.encode(
        [r["text"] for r in records],
        batch_size=64,
        normalize_embeddings=True,
        show_progress_bar=True,
    )
    print(f"encoded {len(records)} texts in {time.perf_counter() - start:.0f}s")
    OUT.mkdir(exist_ok=True)
    np.save(path, vectors.astype(np.float32), allow_pickle=False)
    return records, vectors.astype(np.float32)


def unique_cut(records: list[dict[str, str]], words: int) -> list[dict[str, str]]:
    """Each text cut to its first ``words`` words; records whose cut text was seen dropped."""
    seen: set[str] = set()
    out = []
    for r in records:
        text = " ".join(r["text"].split()[:words])
        if text not in seen:
            seen.add(text)
            out.append({**r, "text": text})
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int)
    records, vectors = cached_embeddings(parser.parse_args().n)
    print(len(records), vectors.shape)
