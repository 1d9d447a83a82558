"""Classification metrics on a held-out split: accuracy, macro-F1, ROC-AUC one-vs-rest
(over the classes that the split has both positives and negatives for), confusion matrix."""

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
