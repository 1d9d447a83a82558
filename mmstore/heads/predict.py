"""Predicting with a classifier head: stored records by id use their stored vectors; new
record dicts are encoded with each input field's serving encoder without being stored (the
path a search query takes); a missing input is masked, not an error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmstore.datasets.aligned import build_dataset
from mmstore.encoding.encode import encode_batch, load_values
from mmstore.errors import (
    DamagedHeadError,
    InvalidInputError,
    NotFoundError,
    RecordError,
    StaleHeadError,
)
from mmstore.heads.artifacts import load_weights, read_meta, staleness
from mmstore.heads.models import FusionClassifier
from mmstore.heads.options import ClassifierOptions
from mmstore.storage import records as record_rows

if TYPE_CHECKING:
    from mmstore.state import CollectionState


def input_order(meta: dict[str, Any]) -> list[str]:
    """The head's inputs in training order (``head.json`` sorts its keys, and a concat
    fusion depends on the order): the configured list, not the keys of ``dims``."""
    order: list[str] = list(meta["config"].get("inputs") or meta["dims"])
    return order


def build_model(meta: dict[str, Any]) -> FusionClassifier:
    cfg = meta["config"]
    return FusionClassifier(
        {f: int(meta["dims"][f]) for f in input_order(meta)},
        len(meta["classes"]),
        fusion=cfg["fusion"],
        hidden=cfg["hidden"],
        mlp_hidden=cfg["mlp_hidden"],
        dropout=cfg["dropout"],
        modality_dropout=cfg["modality_dropout"],
    )


def load_head(col: CollectionState, name: str) -> tuple[dict[str, Any], FusionClassifier]:
    """The head's metadata and its model in eval mode; a stale head raises."""
    meta = read_meta(col, name)
    reason = staleness(col, meta)
    if reason:
        raise StaleHeadError(col.name, name, reason)
    if meta["kind"] != "classifier":
        raise InvalidInputError(
            f"head {name!r} is a {meta['kind']} head; predict takes a classifier"
        )
    weights = load_weights(col, name)
    try:
        _check_shapes(col, meta)
        model = build_model(meta)
        model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # files that do not fit
        raise DamagedHeadError(col.name, name, f"{type(e).__name__}: {e}") from e
    return meta, model.eval()


def _check_shapes(col: CollectionState, meta: dict[str, Any]) -> None:
    """Before a model is built from ``head.json``: its options are valid ones, its input
    dimensions are those of the fields, and it has at least two classes (so that nothing
    it claims can make the model large)."""
    known = ClassifierOptions.model_fields  # options of older versions are not refused
    ClassifierOptions(**{k: v for k, v in meta["config"].items() if k in known})
    for f in input_order(meta):
        if int(meta["dims"][f]) != col.active[f].identity.dim:
            raise ValueError(
                f"input {f!r} is {meta['dims'][f]}-dimensional in head.json, "
                f"the field's vectors are {col.active[f].identity.dim}-dimensional"
            )
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValueError(f"head.json lists {classes!r} as its classes")


def predict(
    col: CollectionState, name: str, records: Any, on_error: str = "raise"
) -> list[dict[str, Any]]:
    """Per record, in order: ``{"id", "label", "probabilities": {class: p}}``. With
    ``on_error="skip"`` a record that cannot be predicted (an unknown id, a bad value, none
    of the head's inputs) gets ``{"id", "label": None, "probabilities": None, "error"}``
    instead of failing the call."""
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    meta, model = load_head(col, name)
    items = _items(records)
    inputs, dims = input_order(meta), meta["dims"]
    x = {f: np.zeros((len(items), int(dims[f])), np.float32) for f in inputs}
    m = {f: np.zeros(len(items), bool) for f in inputs}
    failed: dict[int, str] | None = {} if on_error == "skip" else None
    _fill_stored(col, meta, items, x, m, failed)
    _fill_new(col, items, x, m, failed)
    present = np.stack([m[f] for f in inputs], 1).any(1)
    lacking = [i for i in np.flatnonzero(~present).tolist() if i not in (failed or {})]
    if lacking and failed is None:
        bad = [_rid(items[i], i) for i in lacking[:10]]
        raise InvalidInputError(f"records {bad} have none of the head's inputs {inputs}")
    if failed is not None:
        failed |= {i: f"has none of the head's inputs {inputs}" for i in lacking}
    with torch.no_grad():
        logits = model(
            {f: torch.from_numpy(x[f]) for f in inputs}, {f: torch.from_numpy(m[f]) for f in inputs}
        )
        probs = torch.softmax(logits, 1).numpy()
    return _rows(items, probs, meta["classes"], failed or {})


def _items(records: Any) -> list[Any]:
    if isinstance(records, str | Mapping):
        return [records]
    if isinstance(records, Iterable):
        return list(records)
    raise InvalidInputError(
        f"records are stored ids or record dicts (one, or an iterable), got {records!r}"
    )


def _rows(
    items: list[Any], probs: np.ndarray, classes: list[str], failed: dict[int, str]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, (item, p) in enumerate(zip(items, probs, strict=True)):
        if i in failed:
            out.append({"id": _rid(item, i), "label": None, "probabilities": None})
            out[-1]["error"] = failed[i]
            continue
        out.append(
            {
                "id": _rid(item, i),
                "label": classes[int(p.argmax())],
                "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)},
            }
        )
    return out


def _rid(item: Any, i: int) -> str | None:
    return item.get("id") if isinstance(item, Mapping) else str(item)


def _fill_stored(
    col: CollectionState,
    meta: dict[str, Any],
    items: list[Any],
    x: dict[str, np.ndarray],
    m: dict[str, np.ndarray],
    failed: dict[int, str] | None,
) -> None:
    rows = [i for i, r in enumerate(items) if not isinstance(r, Mapping)]
    if not rows:
        return
    wanted = [str(items[i]) for i in rows]
    if failed is not None:  # unknown ids are reported, not raised (build_dataset would)
        with col.store.catalog.reading() as conn:
            known = record_rows.by_id(conn, col.name, sorted(set(wanted)))
        unknown = f"collection {col.name!r} has no record with this id"
        failed |= {i: unknown for i, rid in zip(rows, wanted, strict=True) if rid not in known}
        kept = [(i, rid) for i, rid in zip(rows, wanted, strict=True) if rid in known]
        rows, wanted = [i for i, _ in kept], [rid for _, rid in kept]
        if not rows:
            return
    ds = build_dataset(col, list(x), label=meta["config"]["label"], ids=sorted(set(wanted)))
    pos = {rid: k for k, rid in enumerate(ds.ids)}
    missing = [rid for rid in wanted if rid not in pos]
    if missing:
        raise NotFoundError(
            f"collection {col.name!r} has no record with id {', '.join(map(repr, missing[:10]))}"
        )
    src = np.array([pos[rid] for rid in wanted], np.int64)
    for f in x:
        x[f][rows] = ds.inputs[f].cpu().numpy()[src]
        m[f][rows] = ds.masks[f].cpu().numpy()[src]


def _fill_new(
    col: CollectionState,
    items: list[Any],
    x: dict[str, np.ndarray],
    m: dict[str, np.ndarray],
    failed: dict[int, str] | None,
) -> None:
    hook = col.store.plugins.hook
    for name in x:
        rows = [
            i for i, r in enumerate(items) if isinstance(r, Mapping) and r.get(name) is not None
        ]
        if not rows:
            continue
        f = col.active[name]
        ids = [str(items[i].get("id", f"<record {i}>")) for i in rows]
        loaded = load_values(hook, f, [items[i][name] for i in rows], ids, name)
        for i, item in zip(rows, loaded, strict=True):
            if isinstance(item, RecordError):
                if failed is None:
                    raise InvalidInputError(str(item)) from item
                failed[i] = str(item)
        good = [(i, v) for i, v in zip(rows, loaded, strict=True) if i not in (failed or {})]
        if good:
            x[name][[i for i, _ in good]] = encode_batch(hook, f, [v for _, v in good])
            m[name][[i for i, _ in good]] = True
