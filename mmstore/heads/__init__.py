"""Task heads trained on stored, aligned embeddings (never raw media), saved as safetensors
plus JSON with their lineage, and served by ``col.predict``.

Kinds are a registry (``KINDS``): a kind has typed options and a trainer; ``head.json``
records the kind, so listing, staleness and loading do not depend on it. ``classifier`` is
built; ``retrieval`` (two projection heads, contrastive loss) is the next kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmstore.config import check_name
from mmstore.errors import InvalidInputError, UnknownNameError
from mmstore.heads.artifacts import (
    StaleHeadError,
    head_dir,
    iter_metas,
    lineage,
    now_iso,
    staleness,
    sweep,
    write_head,
)
from mmstore.heads.options import ClassifierOptions, parse_options
from mmstore.heads.predict import predict
from mmstore.heads.train import Fitted, fit_classifier

if TYPE_CHECKING:
    from mmstore.collection import Collection

KINDS = ("classifier",)
PLANNED = {"retrieval": "retrieval heads are not built yet; train a classifier head"}

__all__ = [
    "KINDS",
    "ClassifierOptions",
    "HeadReport",
    "StaleHeadError",
    "list_heads",
    "predict",
    "train_head",
]


@dataclass
class HeadReport:
    """What a training returns: the test-split metrics, the history and the files written."""

    name: str
    kind: str
    path: Path
    classes: list[str]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(repr=False)
    best_epoch: int
    split_rows: dict[str, int]
    excluded: dict[str, int]
    files: dict[str, Path] = field(repr=False)

    @property
    def accuracy(self) -> float | None:
        acc: float | None = self.metrics.get("accuracy")
        return acc

    def __str__(self) -> str:
        m = self.metrics
        return (
            f"head {self.name!r} ({self.kind}): accuracy {m.get('accuracy')}, macro-F1 "
            f"{m.get('macro_f1')}, ROC-AUC {m.get('roc_auc')} on {m.get('rows')} test rows; "
            f"best epoch {self.best_epoch}; rows {self.split_rows}; left out {self.excluded}"
        )


def train_head(col: Collection, name: str, kind: str = "classifier", **options: Any) -> HeadReport:
    """Validate, read the aligned dataset, train, evaluate, and write the head atomically."""
    check_name("head", name)
    if kind in PLANNED:
        raise InvalidInputError(f"head kind {kind!r}: {PLANNED[kind]}")
    if kind not in KINDS:
        raise UnknownNameError("head kind", kind, KINDS)
    opts: ClassifierOptions = parse_options(ClassifierOptions, kind, options)
    for f in opts.inputs:
        if f not in col.active:
            raise UnknownNameError("field", f, col.active, hint=f"collection {col.name!r}")
    sweep(col)
    ds = col.dataset(inputs=opts.inputs, label=opts.label, where=opts.where)
    fitted = fit_classifier(ds, opts)
    meta = _meta(col, name, kind, opts, fitted, ds.keys, ds.watermark)
    path = write_head(col, name, fitted.model.state_dict(), meta, lambda d: _plots(d, fitted))
    return HeadReport(
        name=name,
        kind=kind,
        path=path,
        classes=fitted.classes,
        metrics=fitted.metrics,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        split_rows=fitted.split_rows,
        excluded=fitted.excluded,
        files={p.stem: p for p in sorted(path.iterdir())},
    )


def _meta(
    col: Collection,
    name: str,
    kind: str,
    opts: ClassifierOptions,
    fitted: Fitted,
    keys: dict[str, str],
    watermark: int,
) -> dict[str, Any]:
    from mmstore import __version__

    return {
        "name": name,
        "kind": kind,
        "collection": col.name,
        "config": opts.model_dump(mode="json"),
        "dims": fitted.dims,
        "classes": fitted.classes,
        "metrics": fitted.metrics,
        "history": fitted.history,
        "best_epoch": fitted.best_epoch,
        "split_rows": fitted.split_rows,
        "excluded": fitted.excluded,
        "lineage": lineage(col, opts.inputs, keys, watermark, fitted.used_ids),
        "created_at": now_iso(),
        "mmstore_version": __version__,
    }


def _plots(folder: Path, fitted: Fitted) -> dict[str, str]:
    from mmstore.heads import plots

    out = {
        "curves": plots.training_curves(fitted.history, folder / "curves.png"),
        "confusion": plots.confusion(
            fitted.metrics["confusion_matrix"], fitted.classes, folder / "confusion.png"
        ),
        "embedding_map": plots.embedding_map(
            fitted.embeddings, fitted.codes, fitted.classes, folder / "embedding_map.png"
        ),
    }
    return {k: p.name for k, p in out.items()}


def list_heads(col: Collection) -> list[dict[str, Any]]:
    """Each head: name, kind, inputs, metrics, created_at, stale and the reason, path."""
    out = []
    for meta in iter_metas(col):
        reason = staleness(col, meta)
        out.append(
            {
                "name": meta["name"],
                "kind": meta["kind"],
                "inputs": list(meta["lineage"]["fields"]),
                "label": meta["config"].get("label"),
                "classes": meta.get("classes"),
                "metrics": meta["metrics"],
                "created_at": meta["created_at"],
                "stale": reason is not None,
                "reason": reason,
                "path": str(head_dir(col, meta["name"])),
            }
        )
    return out
