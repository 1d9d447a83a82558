"""Retrieval heads: two projection towers (one per field, ``Linear GELU Linear``, outputs
L2-normalized) map a query field and a target field that live in different embedding
spaces into one joint space. Trained on the records that carry both fields with a
symmetric InfoNCE loss (cross-entropy over in-batch similarities, query -> target and
target -> query) whose temperature is learned; AdamW, the id-hash split, early stopping on
the validation mean of Recall@1/5/10 (both directions), seeded throughout.

Serving: ``col.search(<query field>=value, target=<target field>, head=name)`` encodes the
value with the query field's encoder, projects it with the query tower and searches an
index of every stored target vector projected with the target tower. That index is built
on first use and kept in memory per head; it is rebuilt when the head file or the target
field's index changes (size, last vid, deletions, active encoder key)."""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmstore.config import check_name
from mmstore.errors import InvalidInputError, StaleHeadError, UnknownNameError
from mmstore.heads.artifacts import META, head_dir, head_names, load_weights, staleness
from mmstore.heads.metrics import mean_recall, retrieval_metrics
from mmstore.heads.options import RetrievalOptions
from mmstore.heads.split import SPLIT_NAMES, TEST, TRAIN, VAL, assign_splits
from mmstore.index.vectors import VectorIndex

if TYPE_CHECKING:
    from mmstore.datasets.aligned import AlignedDataset
    from mmstore.encoding.fields import Field
    from mmstore.state import CollectionState

#: fewest records carrying both fields that a retrieval head trains on
MIN_PAIRS = 10
#: the learned logit scale 1/temperature stays in [1, 100] (temperature 0.01 .. 1)
LOG_SCALE_MAX = math.log(100.0)
EVAL_BATCH = 8192


class Tower(nn.Module):
    """One side: ``Linear(dim, hidden) GELU Linear(hidden, out_dim)``, L2-normalized."""

    def __init__(self, dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class TwoTower(nn.Module):
    """A query tower, a target tower and a learned log logit scale (log 1/temperature)."""

    def __init__(
        self, query_dim: int, target_dim: int, hidden: int, out_dim: int, temperature: float
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.query = Tower(query_dim, hidden, out_dim)
        self.target = Tower(target_dim, hidden, out_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.log_scale.detach().clamp(0.0, LOG_SCALE_MAX)))

    def loss(self, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of a batch of pairs (row i of ``q`` pairs with row i of ``t``)."""
        scale = self.log_scale.clamp(0.0, LOG_SCALE_MAX).exp()
        logits = scale * self.query(q) @ self.target(t).T
        labels = torch.arange(len(q), device=q.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@dataclass
class RetrievalFit:
    """What training produced; ``metrics`` holds the test split's and the baseline's."""

    model: TwoTower
    dims: dict[str, int]
    history: list[dict[str, Any]]
    best_epoch: int
    used_ids: list[str]
    split_rows: dict[str, int]
    excluded: dict[str, int]
    metrics: dict[str, Any]


def fit_retrieval(ds: AlignedDataset, opts: RetrievalOptions, device: torch.device) -> RetrievalFit:
    """Train a retrieval head on the rows of ``ds`` that carry both fields; raises
    InvalidInputError when too few do."""
    query, target = opts.query, opts.target
    mq, mt = ds.masks[query].cpu().numpy(), ds.masks[target].cpu().numpy()
    excluded = {
        "no_query": int((~mq & mt).sum()),
        "no_target": int((mq & ~mt).sum()),
        "neither": int((~mq & ~mt).sum()),
    }
    both = mq & mt
    n = int(both.sum())
    if n < MIN_PAIRS:
        raise InvalidInputError(
            f"too few paired records to train a retrieval head: {n} carry both {query!r} and "
            f"{target!r} (at least {MIN_PAIRS} needed); left out: {excluded}"
        )
    ds = ds.subset(both)
    split = assign_splits(ds.ids, opts.split)
    rows = {s: int((split == s).sum()) for s in (TRAIN, VAL, TEST)}
    if rows[TRAIN] < 2 or rows[TEST] < 2:
        raise InvalidInputError(
            f"too few paired records: the id-hash split of {n} pairs left {rows[TRAIN]} "
            f"for training and {rows[TEST]} for testing (at least 2 each); add records or "
            f"change split={opts.split}"
        )
    val_split = VAL if rows[VAL] >= 2 else TRAIN  # tiny sets: stop on the training pairs

    torch.manual_seed(opts.seed)
    dims = {query: int(ds.inputs[query].shape[1]), target: int(ds.inputs[target].shape[1])}
    model = TwoTower(dims[query], dims[target], opts.hidden, opts.out_dim, opts.temperature)
    model = model.to(device)
    initial = copy.deepcopy(model.state_dict())
    xq = ds.inputs[query].to(device, torch.float32)
    xt = ds.inputs[target].to(device, torch.float32)
    part = {s: torch.from_numpy(np.flatnonzero(split == s)).to(device) for s in (TRAIN, VAL, TEST)}

    history, best_epoch, best_state = _loop(model, xq, xt, part[TRAIN], part[val_split], opts)
    model.load_state_dict(best_state)
    test = part[TEST]
    metrics = _evaluate(model, xq[test], xt[test])
    baseline_model = copy.deepcopy(model)
    baseline_model.load_state_dict(initial)
    baseline = _evaluate(baseline_model, xq[test], xt[test])
    metrics |= {"temperature": model.temperature, "baseline": baseline}
    return RetrievalFit(
        model=model.cpu().eval(),
        dims=dims,
        history=history,
        best_epoch=best_epoch,
        used_ids=list(ds.ids),
        split_rows={SPLIT_NAMES[s]: rows[s] for s in (TRAIN, VAL, TEST)},
        excluded=excluded,
        metrics=metrics,
    )


def _loop(
    model: TwoTower,
    xq: torch.Tensor,
    xt: torch.Tensor,
    train: torch.Tensor,
    val: torch.Tensor,
    opts: RetrievalOptions,
) -> tuple[list[dict[str, Any]], int, dict[str, torch.Tensor]]:
    """Epochs of shuffled in-batch contrastive steps (index tensors into the in-memory
    inputs); early stopping on the validation mean of Recall@1/5/10 with ``patience``."""
    decay = [p for n, p in model.named_parameters() if n != "log_scale"]
    optim = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": opts.weight_decay},
            {"params": [model.log_scale], "weight_decay": 0.0},
        ],
        lr=opts.lr,
    )
    gen = torch.Generator().manual_seed(opts.seed)
    history: list[dict[str, Any]] = []
    best, best_epoch, best_state, waited = -1.0, 0, copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, opts.epochs + 1):
        model.train()
        order = train[torch.randperm(len(train), generator=gen).to(train.device)]
        total, counted = 0.0, 0
        for start in range(0, len(order), opts.batch_size):
            idx = order[start : start + opts.batch_size]
            if len(idx) < 2:  # one pair has no negatives: nothing to learn from
                continue
            loss = model.loss(xq[idx], xt[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            with torch.no_grad():
                model.log_scale.clamp_(0.0, LOG_SCALE_MAX)
            total += float(loss.detach()) * len(idx)
            counted += len(idx)
        model.eval()
        val_metrics = _evaluate(model, xq[val], xt[val])
        score = mean_recall(val_metrics)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(counted, 1),
                "val_loss": _batched_loss(model, xq[val], xt[val], opts.batch_size),
                "val_recall@10": _mean_r10(val_metrics),
                "val_mean_recall": score,
                "temperature": model.temperature,
            }
        )
        if score > best:
            best, best_epoch, waited = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= opts.patience:
                break
    return history, best_epoch, best_state


def _mean_r10(metrics: dict[str, Any]) -> float:
    r = [metrics[d]["recall@10"] or 0.0 for d in ("query_to_target", "target_to_query")]
    return float(np.mean(r))


def _batched_loss(model: TwoTower, xq: torch.Tensor, xt: torch.Tensor, batch: int) -> float:
    """The contrastive loss over consecutive batches of the rows (as training sees it)."""
    total, counted = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(xq), batch):
            q, t = xq[start : start + batch], xt[start : start + batch]
            if len(q) >= 2:
                total += float(model.loss(q, t)) * len(q)
                counted += len(q)
    return total / max(counted, 1)


def _project(tower: nn.Module, x: torch.Tensor) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            out.append(tower(x[start : start + EVAL_BATCH]).cpu())
    if not out:
        return np.zeros((0, 1), np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def _evaluate(model: TwoTower, xq: torch.Tensor, xt: torch.Tensor) -> dict[str, Any]:
    was = model.training
    model.eval()
    try:
        return retrieval_metrics(_project(model.query, xq), _project(model.target, xt))
    finally:
        model.train(was)


def training_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Loss (train, validation) and validation Recall@10 per epoch, as a PNG."""
    from mmstore.heads import plots

    return plots.training_curves(history, path, "val_recall@10", "Recall@10", "symmetric InfoNCE")


# -- serving ----------------------------------------------------------------------------
def build_model(meta: dict[str, Any]) -> TwoTower:
    cfg, dims = meta["config"], meta["dims"]
    return TwoTower(
        int(dims[cfg["query"]]),
        int(dims[cfg["target"]]),
        int(cfg["hidden"]),
        int(cfg["out_dim"]),
        float(cfg["temperature"]),
    )


@dataclass
class Served:
    """A loaded retrieval head and the index of its projected targets."""

    key: tuple[Any, ...]
    meta: dict[str, Any]
    model: TwoTower
    index: VectorIndex

    @property
    def query(self) -> str:
        return str(self.meta["config"]["query"])

    @property
    def target(self) -> str:
        return str(self.meta["config"]["target"])

    def project_query(self, vector: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(vector, np.float32).reshape(1, -1))
        return _project(self.model.query, x)


def read_head(col: CollectionState, name: str) -> tuple[dict[str, Any], str]:
    """A head's meta and a digest of its ``head.json`` (which changes on retraining)."""
    import json

    check_name("head", name)
    path = head_dir(col, name) / META
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UnknownNameError(
            "head", name, head_names(col), hint=f"collection {col.name!r}"
        ) from None
    meta: dict[str, Any] = json.loads(raw)
    return meta, hashlib.sha256(raw).hexdigest()


def serve(col: CollectionState, name: str, cache: dict[str, Served]) -> Served:
    """The retrieval head ``name`` ready to search, from ``cache`` when nothing changed.
    Unknown heads raise UnknownNameError, stale heads StaleHeadError, other kinds
    InvalidInputError."""
    meta, digest = read_head(col, name)
    if meta["kind"] != "retrieval":
        raise InvalidInputError(
            f"head {name!r} is a {meta['kind']} head; search with head= takes a retrieval head "
            f"(col.train_head(..., kind='retrieval', query=..., target=...))"
        )
    reason = staleness(col, meta)
    if reason:
        raise StaleHeadError(col.name, name, reason)
    tgt = col.active[meta["config"]["target"]]
    tindex = col.indexes.get(tgt)
    key = (digest, tgt.key, tindex.size, tindex.last_vid, tindex.n_dead)
    hit = cache.get(name)
    if hit is not None and hit.key == key:
        return hit
    model = build_model(meta)
    model.load_state_dict(load_weights(col, name))
    model.eval()
    served = Served(key, meta, model, _projected_index(col, tgt, model))
    cache[name] = served
    return served


def _projected_index(col: CollectionState, tgt: Field, model: TwoTower) -> VectorIndex:
    """Every live vector of the target field's index, projected by the target tower,
    under the same vids (so filters and hit hydration work as for the field itself)."""
    tindex = col.indexes.get(tgt)
    pos = np.flatnonzero(~tindex.dead)
    vids = tindex.vids[pos]
    projected = _project(model.target, torch.from_numpy(tindex.vectors_at(pos)))
    order = np.argsort(vids, kind="stable")
    index = VectorIndex(model.out_dim, col.config.index)
    index.add(vids[order], projected[order])
    if index.needs_optimize():
        index.optimize()
    return index


def check_query_name(served: Served, name: str, fields: Mapping[str, Field], head: str) -> None:
    """A query value ``name=`` must be the head's query field (or its modality)."""
    qf = fields.get(served.query)
    if name == served.query or (qf is not None and name == qf.modality.name):
        return
    raise InvalidInputError(
        f"head {head!r} maps field {served.query!r} (query) to field {served.target!r} "
        f"(target); search with {served.query}=..., not {name}=..."
    )
