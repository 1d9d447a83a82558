"""Heads on stored features, measured.

1. ``digits``: scikit-learn's handwritten digits (1,797 real 8x8 scans) stored with a
   description of each scan embedded by the bundled all-MiniLM-L6-v2. The image field holds
   the scan's 64 pixels as its stored vector (no pretrained image encoder is available
   offline). Reports a classifier head on image + text and on image alone (accuracy,
   macro-F1, ROC-AUC on the held-out split) and, when retrieval heads are available, a
   text -> image retrieval head (Recall@10, and the precision of the top 10: the fraction
   of hits showing the query's digit) against the untrained baseline.
2. ``train``: time per epoch of ``col.train_head`` on 100,000 stored 512-d embeddings as a
   ratio of the same loop over tensors already in memory (goal <= 1.3).

    .venv/bin/python benchmarks/bench_heads.py [digits|train|all]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import mmstore

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SHAPES = {
    0: "a closed oval loop",
    1: "a single upright stroke",
    2: "a curve on top sweeping into a flat base",
    3: "two bumps stacked on the right side",
    4: "an open triangle crossed by a vertical stroke",
    5: "a flat top, a short down stroke and a round belly",
    6: "a tall curve ending in a small loop at the bottom",
    7: "a flat top bar with a long diagonal",
    8: "two loops stacked on top of each other",
    9: "a small loop on top with a straight tail",
}
VAGUE = ["a faint pen mark on a small grid", "a blurry handwritten symbol", "an ink scribble"]


def describe(label: int, rng: np.random.Generator) -> str:
    """A description of a scan: its shape (70%), its name (10%) or something vague (20%)."""
    roll = rng.random()
    if roll < 0.7:
        return f"handwriting showing {SHAPES[label]}"
    if roll < 0.8:
        return f"the digit {DIGIT_WORDS[label]} written by hand"
    return str(rng.choice(VAGUE))


def digits(folder: Path) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(0)
    pixels = (data.data / 16.0).astype(np.float32)
    records = [
        {
            "id": f"d{i:04d}",
            "label": str(int(y)),
            "image": pixels[i].tolist(),
            "text": describe(int(y), rng),
        }
        for i, y in enumerate(data.target)
    ]
    out: dict[str, Any] = {"records": len(records)}
    with mmstore.open(folder / "digits") as store:
        col = store.create_collection(
            "digits",
            encoders={
                "image": {"encoder": "precomputed", "modality": "vector", "dim": 64,
                          "space": "pixels"},
                "text": "sentence_transformers",
            },
        )  # fmt: skip
        t0 = time.perf_counter()
        col.ingest(records)
        out["ingest_seconds"] = round(time.perf_counter() - t0, 1)
        for name, inputs in (("image_text", ["image", "text"]), ("image_only", ["image"])):
            report = col.train_head(name, inputs=inputs, fusion="attention", seed=0)
            m = report.metrics
            out[name] = {
                k: round(float(m[k]), 4) for k in ("accuracy", "macro_f1", "roc_auc") if k in m
            } | {"test_rows": m.get("rows"), "best_epoch": report.best_epoch}
            print(name, out[name], flush=True)
        out["retrieval"] = retrieval(col, data.target, rng)
    return out


def retrieval(col: mmstore.Collection, labels: np.ndarray, rng: np.random.Generator) -> Any:
    """A text -> image retrieval head, with the untrained baseline, if the kind exists."""
    try:
        report = col.train_head("text2image", kind="retrieval", query="text", target="image")
    except mmstore.InvalidInputError as e:
        print("retrieval heads:", e)
        return {"skipped": str(e)}
    # the untrained baseline: the same towers at their initial weights (a learning rate
    # too small to move them, one epoch)
    col.train_head("untrained", kind="retrieval", query="text", target="image", lr=1e-12,
                   epochs=1)  # fmt: skip
    result: dict[str, Any] = {"metrics": report.metrics}
    test = held_out_ids(col)
    for head in ("text2image", "untrained"):
        precision = []
        for digit in range(10):
            text = f"handwriting showing {SHAPES[digit]}"
            hits = col.search(text=text, target="image", head=head, k=len(labels))
            held = [h for h in hits if h.id in test][:10]  # held-out scans only
            precision.append(np.mean([h.label == str(digit) for h in held]))
        result[f"precision_at_10_{head}_test_scans"] = float(np.mean(precision))
    print("retrieval", result, flush=True)
    return result


def held_out_ids(col: mmstore.Collection) -> set[str]:
    """Ids in the test split of the heads' id-hash split (default fractions)."""
    from mmstore.heads.split import TEST, assign_splits

    ids = col.dataset(["image"], label=None).ids
    return {i for i, s in zip(ids, assign_splits(ids, (0.7, 0.15, 0.15)), strict=True) if s == TEST}


def train(folder: Path, n: int = 100_000, dim: int = 512, epochs: int = 10) -> dict[str, Any]:
    """End-to-end ``train_head`` (read from the catalog, train, evaluate, write artifacts)
    against the same model, options and epochs over tensors already in memory."""
    import pyarrow as pa
    import torch

    from mmstore.heads.models import FusionClassifier
    from mmstore.heads.options import ClassifierOptions
    from mmstore.heads.train import _loop

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, dim)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    vectors = centers[labels] + 2.0 * rng.normal(size=(n, dim)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"r{i:06d}" for i in range(n)],
            "label": [str(x) for x in labels],
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        }
    )
    options = {"epochs": epochs, "patience": epochs, "batch_size": 256, "seed": 0}
    out: dict[str, Any] = {
        "rows": n,
        "dim": dim,
        "epochs": epochs,
        "threads": torch.get_num_threads(),
    }
    with mmstore.open(folder / "train") as store:
        spec = {"emb": {"encoder": "precomputed", "modality": "vector", "dim": dim}}
        col = store.create_collection("big", encoders=spec)
        col.ingest(table, chunk_size=50_000)
        mms, loop_only, raw = [], [], []
        for repeat in range(3):
            t0 = time.perf_counter()
            report = col.train_head(f"h{repeat}", inputs=["emb"], **options)
            mms.append((time.perf_counter() - t0) / len(report.history))
            loop_only.append(statistics.median(h["seconds"] for h in report.history))
            raw.append(raw_epoch_seconds(vectors, labels, options, FusionClassifier, _loop,
                                         ClassifierOptions))  # fmt: skip
            print(f"repeat {repeat + 1}: train_head {mms[-1]:.2f} s/epoch, raw {raw[-1]:.2f}",
                  flush=True)  # fmt: skip
    out |= {
        "train_head_end_to_end_s_per_epoch": round(statistics.median(mms), 3),
        "train_head_epoch_s": round(statistics.median(loop_only), 3),
        "raw_loop_s_per_epoch": round(statistics.median(raw), 3),
        "ratio_epoch": round(statistics.median(loop_only) / statistics.median(raw), 3),
        "ratio_end_to_end": round(statistics.median(mms) / statistics.median(raw), 3),
    }
    return out


def raw_epoch_seconds(
    vectors: np.ndarray, labels: np.ndarray, options: dict[str, Any], model_cls: Any,
    loop: Any, options_cls: Any,
) -> float:  # fmt: skip
    """The same model and loop (shuffled minibatches, validation each epoch) over tensors in
    memory, with the same 70/15/15 proportions: seconds per epoch."""
    import torch

    n = len(vectors)
    torch.manual_seed(0)
    opts = options_cls(inputs=["emb"], **options)
    model = model_cls({"emb": vectors.shape[1]}, 10, fusion=opts.fusion, hidden=opts.hidden,
                      mlp_hidden=opts.mlp_hidden, dropout=opts.dropout,
                      modality_dropout=opts.modality_dropout)  # fmt: skip
    x = {"emb": torch.from_numpy(vectors)}
    m = {"emb": torch.ones(n, dtype=torch.bool)}
    y = torch.from_numpy(labels.astype(np.int64))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    train, val = perm[: int(0.7 * n)], perm[int(0.7 * n) : int(0.85 * n)]
    from mmstore.heads.distributed import World

    t0 = time.perf_counter()
    history = loop(model, x, m, y, train, val, opts, World())[0]
    return (time.perf_counter() - t0) / len(history)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if which in ("digits", "all"):
            results["digits"] = digits(Path(tmp))
        if which in ("train", "all"):
            results["train"] = train(Path(tmp))
    print(results)


if __name__ == "__main__":
    from mmstore.cli.exit import exit_quietly

    main()
    exit_quietly(0)
