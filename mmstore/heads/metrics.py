"""Classification metrics on a held-out split: accuracy, macro-F1, ROC-AUC one-vs-rest
(over the classes that the split has both positives and negatives for), confusion matrix;
retrieval metrics over paired rows: Recall@1/5/10 and median rank, both directions."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if len(y_true) == 0:
        return 0.0
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def roc_auc_ovr(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Per class AUC of its probability against the rest; classes absent from ``y_true``
    (or the only class present) have no AUC and are left out."""
    out = {}
    for c, name in enumerate(classes):
        pos = y_true == c
        if pos.any() and not pos.all():
            out[name] = float(roc_auc_score(pos, probs[:, c]))
    return out


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """The report's metrics for true codes ``y_true`` and class probabilities ``probs``."""
    n = len(y_true)
    if n == 0:
        return {
            "rows": 0,
            "accuracy": None,
            "macro_f1": None,
            "roc_auc": None,
            "roc_auc_per_class": {},
            "confusion_matrix": [],
        }
    pred = probs.argmax(1)
    per_class = roc_auc_ovr(y_true, probs, classes)
    return {
        "rows": n,
        "accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": macro_f1(y_true, pred),
        "roc_auc": float(np.mean(list(per_class.values()))) if per_class else None,
        "roc_auc_per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, pred, labels=range(len(classes))).tolist(),
    }


# -- retrieval --------------------------------------------------------------------------
RECALL_AT = (1, 5, 10)
RANK_CHUNK = 1024


def pair_ranks(queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per query row ``i``, the rank (1 = best) of its own pair ``targets[i]`` among all
    ``targets`` by inner product; ties count against the pair (a tie is not a win). Rows
    are scored in chunks, so memory stays at ``RANK_CHUNK x len(targets)``."""
    n = len(queries)
    if len(targets) != n:
        raise ValueError(f"{n} queries but {len(targets)} targets: rows must be pairs")
    out = np.empty(n, np.int64)
    for start in range(0, n, RANK_CHUNK):
        sims = queries[start : start + RANK_CHUNK] @ targets.T
        rows = np.arange(len(sims))
        own = sims[rows, start + rows][:, None]
        out[start : start + len(sims)] = (sims >= own).sum(1)  # counts the pair itself
    return out


def rank_metrics(ranks: np.ndarray) -> dict[str, Any]:
    """Recall@1/5/10 (fraction of pairs ranked within k) and the median rank."""
    if len(ranks) == 0:
        return {**{f"recall@{k}": None for k in RECALL_AT}, "median_rank": None}
    return {
        **{f"recall@{k}": float((ranks <= k).mean()) for k in RECALL_AT},
        "median_rank": float(np.median(ranks)),
    }


def retrieval_metrics(queries: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Both directions over paired rows of L2-normalized embeddings: ``query_to_target``
    ranks each query's target among all targets, ``target_to_query`` the reverse."""
    return {
        "rows": len(queries),
        "query_to_target": rank_metrics(pair_ranks(queries, targets)),
        "target_to_query": rank_metrics(pair_ranks(targets, queries)),
    }


def mean_recall(metrics: dict[str, Any]) -> float:
    """The mean of Recall@1/5/10 over both directions (the early-stopping score)."""
    values = [
        metrics[d][f"recall@{k}"] for d in ("query_to_target", "target_to_query") for k in RECALL_AT
    ]
    return float(np.mean([v or 0.0 for v in values]))
