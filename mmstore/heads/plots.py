"""PNG plots of a head: training curves, confusion matrix, a 2-D PCA map of the fused
embeddings coloured by label. Drawn on Agg canvases (no pyplot, no global backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

MAP_ROWS = 5000


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def training_curves(
    history: list[dict[str, Any]],
    path: Path,
    score: str = "val_macro_f1",
    score_label: str = "macro-F1",
    loss_label: str = "cross-entropy",
) -> Path:
    """Loss (train, validation) and a validation score per epoch, as a PNG."""
    fig = Figure(figsize=(8, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax1.set(xlabel="epoch", ylabel=loss_label, title="loss")
    ax1.legend()
    ax2.plot(epochs, [h[score] for h in history], color="tab:green")
    ax2.set(xlabel="epoch", ylabel=score_label, title=f"validation {score_label}", ylim=(0, 1.02))
    return _save(fig, path)


def confusion(matrix: list[list[int]], classes: list[str], path: Path) -> Path:
    fig = Figure(figsize=(1.5 + 0.5 * len(classes), 1.2 + 0.5 * len(classes)))
    ax = fig.subplots()
    cm = np.asarray(matrix if matrix else np.zeros((len(classes), len(classes))))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8)
    return _save(fig, path)


def embedding_map(emb: np.ndarray, codes: np.ndarray, classes: list[str], path: Path) -> Path:
    """PCA of the fused embeddings (a deterministic sample of at most MAP_ROWS rows)."""
    if len(emb) > MAP_ROWS:
        keep = np.linspace(0, len(emb) - 1, MAP_ROWS).astype(int)
        emb, codes = emb[keep], codes[keep]
    xy = np.zeros((len(emb), 2))
    if len(emb) >= 2 and emb.shape[1] >= 2:
        xy = PCA(n_components=2, random_state=0).fit_transform(emb)
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for c, name in enumerate(classes):
        sel = codes == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, label=name)
    ax.set(title="fused embeddings (PCA)", xlabel="PC1", ylabel="PC2")
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2)
    return _save(fig, path)
