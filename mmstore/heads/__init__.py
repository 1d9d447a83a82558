"""Task heads trained on stored, aligned embeddings (never raw media), saved as safetensors
plus JSON with their lineage, and served by ``col.predict``.

Kinds are a registry (``KINDS``): a kind has typed options and a trainer; ``head.json``
records the kind, so listing, staleness and loading do not depend on it. ``classifier``
(fusion of several fields, cross-entropy) and ``retrieval`` (two projection towers into a
joint space, symmetric contrastive loss, served by ``col.search(..., head=name)``; see
:mod:`mmstore.heads.retrieval`) are built."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmstore.api import HeadReport
from mmstore.config import check_name
from mmstore.errors import InvalidInputError, StaleHeadError, UnknownNameError
from mmstore.heads.artifacts import (
    head_dir,
    iter_metas,
    lineage,
    now_iso,
    staleness,
    sweep,
    write_head,
)
from mmstore.heads.options import ClassifierOptions, RetrievalOptions, parse_options
from mmstore.heads.predict import predict
from mmstore.heads.train import Fitted, fit_classifier

if TYPE_CHECKING:
    from mmstore.state import CollectionState

KINDS = ("classifier", "retrieval")
PLANNED: dict[str, str] = {}

__all__ = [
    "KINDS",
    "ClassifierOptions",
    "HeadReport",
    "RetrievalOptions",
    "StaleHeadError",
    "list_heads",
    "predict",
    "train_head",
]


def train_head(
    col: CollectionState, name: str, kind: str = "classifier", **options: Any
) -> HeadReport:
    """Validate, read the aligned dataset, train, evaluate, and write the head atomically."""
    check_name("head", name)
    if kind in PLANNED:
        raise InvalidInputError(f"head kind {kind!r}: {PLANNED[kind]}")
    if kind not in KINDS:
        raise UnknownNameError("head kind", kind, KINDS)
    if kind == "retrieval":
        return _train_retrieval(col, name, options)
    opts: ClassifierOptions = parse_options(ClassifierOptions, kind, options)
    for f in opts.inputs:
        if f not in col.active:
            raise col.no_field(f, col.active, hint=f"collection {col.name!r}")
    from mmstore.datasets.aligned import build_dataset

    sweep(col)
    ds = build_dataset(col, opts.inputs, label=opts.label, where=opts.where)
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
    col: CollectionState,
    name: str,
    kind: str,
    opts: ClassifierOptions,
    fitted: Fitted,
    keys: dict[str, str],
    watermark: int,
) -> dict[str, Any]:
    from mmstore._version import __version__

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


def _train_retrieval(col: CollectionState, name: str, options: dict[str, Any]) -> HeadReport:
    """Train a retrieval head from ``query`` to ``target`` (field names, or a modality that
    exactly one field has) on the records that carry both."""
    from mmstore.datasets.aligned import build_dataset, resolve_inputs
    from mmstore.heads import retrieval
    from mmstore.heads.train import pick_device

    opts: RetrievalOptions = parse_options(RetrievalOptions, "retrieval", options)
    if getattr(opts, "dp", None) is not None:  # refused, never silently ignored
        raise InvalidInputError(
            "dp=: differential privacy is built for classifier heads only; "
            "train the retrieval head without dp="
        )
    qf, tf = resolve_inputs(col, [opts.query, opts.target])
    opts = opts.model_copy(update={"query": qf.name, "target": tf.name})
    device = pick_device(opts.device)
    sweep(col)
    ds = build_dataset(col, [qf.name, tf.name], label=None, where=opts.where)
    fitted = retrieval.fit_retrieval(ds, opts, device)
    from mmstore._version import __version__

    meta = {
        "name": name,
        "kind": "retrieval",
        "collection": col.name,
        "config": opts.model_dump(mode="json"),
        "dims": fitted.dims,
        "classes": [],
        "metrics": fitted.metrics,
        "history": fitted.history,
        "best_epoch": fitted.best_epoch,
        "split_rows": fitted.split_rows,
        "excluded": fitted.excluded,
        "lineage": lineage(col, [qf.name, tf.name], ds.keys, ds.watermark, fitted.used_ids),
        "created_at": now_iso(),
        "mmstore_version": __version__,
    }

    def plots(folder: Path) -> dict[str, str]:
        return {"curves": retrieval.training_curves(fitted.history, folder / "curves.png").name}

    path = write_head(col, name, fitted.model.state_dict(), meta, plots)
    return HeadReport(
        name=name,
        kind="retrieval",
        path=path,
        classes=[],
        metrics=fitted.metrics,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        split_rows=fitted.split_rows,
        excluded=fitted.excluded,
        files={p.stem: p for p in sorted(path.iterdir())},
    )


def _plots(folder: Path, fitted: Fitted) -> dict[str, str]:
    from mmstore.heads import plots

    out = {
        "curves": plots.training_curves(fitted.history, folder / "curves.png"),
        "confusion": plots.confusion(
            fitted.metrics["confusion_matrix"], fitted.classes, folder / "confusion.png"
        ),
    }
    if "privacy" not in fitted.metrics:  # the map shows training rows: not under DP
        out["embedding_map"] = plots.embedding_map(
            fitted.embeddings, fitted.codes, fitted.classes, folder / "embedding_map.png"
        )
    return {k: p.name for k, p in out.items()}


def list_heads(col: CollectionState) -> list[dict[str, Any]]:
    """Each head: name, kind, inputs, label (classifier) or query and target (retrieval),
    metrics, created_at, stale and the reason, path."""
    out = []
    for meta in iter_metas(col):
        reason = staleness(col, meta)
        out.append(
            {
                "name": meta["name"],
                "kind": meta["kind"],
                "inputs": list(meta["lineage"]["fields"]),
                "label": meta["config"].get("label"),
                "query": meta["config"].get("query"),
                "target": meta["config"].get("target"),
                "classes": meta.get("classes"),
                "metrics": meta["metrics"],
                "created_at": meta["created_at"],
                "stale": reason is not None,
                "reason": reason,
                "path": str(head_dir(col, meta["name"])),
            }
        )
    return out
