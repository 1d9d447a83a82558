"""The classifier training loop on an aligned dataset already in memory: rows without a
label or without any present input are left out (and counted), the split is by id hash,
AdamW on cross-entropy, early stopping on validation macro-F1, seeded throughout.

Two options change the loop: ``dp`` trains with DP-SGD through Opacus (Poisson-sampled
batches, clipped and noised per-sample gradients; :mod:`mmstore.heads.privacy`) and records
the spent epsilon in ``metrics["privacy"]``; inside a torchrun process group the model is
wrapped in DistributedDataParallel and the training rows are sharded by record hash
(:mod:`mmstore.heads.distributed`, under torchrun or Ray Train), recorded in
``metrics["distributed"]``."""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmstore.errors import InvalidInputError
from mmstore.heads import privacy
from mmstore.heads.distributed import Shards, World, current
from mmstore.heads.metrics import classification_metrics, macro_f1
from mmstore.heads.models import FusionClassifier
from mmstore.heads.options import ClassifierOptions
from mmstore.heads.split import SPLIT_NAMES, TEST, TRAIN, VAL, assign_splits

if TYPE_CHECKING:
    from mmstore.datasets.aligned import AlignedDataset

EVAL_BATCH = 8192


@dataclass
class Fitted:
    """What training produced: the model (best epoch), its classes, the history, the rows
    used per split, the rows left out and why, and the test metrics."""

    model: FusionClassifier
    classes: list[str]
    dims: dict[str, int]
    history: list[dict[str, Any]]
    best_epoch: int
    used_ids: list[str]
    split_rows: dict[str, int]
    excluded: dict[str, int]
    metrics: dict[str, Any]
    embeddings: np.ndarray = field(repr=False)
    codes: np.ndarray = field(repr=False)


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device='cuda' asked for, but no CUDA device is visible")
    return torch.device(choice)


def usable_rows(ds: AlignedDataset, inputs: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Rows with a label and at least one present input; counts of the others."""
    labelled = np.array([lab is not None for lab in (ds.labels or [None] * len(ds))], bool)
    present = torch.stack([ds.masks[f] for f in inputs], 1).any(1).cpu().numpy()
    excluded = {
        "unlabelled": int((~labelled).sum()),
        "no_input": int((labelled & ~present).sum()),
    }
    return np.flatnonzero(labelled & present), excluded


def fit_classifier(ds: AlignedDataset, opts: ClassifierOptions) -> Fitted:
    """Train a classifier head on ``ds``; raises InvalidInputError when it cannot."""
    ds, excluded, classes, codes_t, split = _trainable(ds, opts)
    val_split = VAL if (split == VAL).any() else TRAIN  # tiny sets: stop on the train rows
    world = current()
    _check_dp(opts, split, world)
    device = pick_device(opts.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    dims = {f: int(ds.inputs[f].shape[1]) for f in opts.inputs}
    model = _model(dims, len(classes), opts).to(device)
    x = {f: ds.inputs[f].to(device, torch.float32) for f in opts.inputs}
    m = {f: ds.masks[f].to(device, torch.bool) for f in opts.inputs}
    y = codes_t.to(device)
    part = {s: torch.from_numpy(np.flatnonzero(split == s)).to(device) for s in (TRAIN, VAL, TEST)}
    shards = None
    if world.distributed:  # same initial weights everywhere, different dropout per rank
        torch.manual_seed(opts.seed + world.rank)
        shards = world.shards(part[TRAIN], [ds.ids[i] for i in part[TRAIN].tolist()])
    history, best_epoch, best_state, extra = _loop(
        model, x, m, y, part[TRAIN], part[val_split], opts, world, shards
    )
    model.load_state_dict(best_state)
    model.eval()
    test = part[TEST]
    codes = codes_t.cpu().numpy()
    probs = _probs(model, x, m, test).cpu().numpy()
    with torch.no_grad():
        emb = model.embed(x, m).cpu().numpy()
    return Fitted(
        model=model.cpu(),
        classes=classes,
        dims=dims,
        history=history,
        best_epoch=best_epoch,
        used_ids=list(ds.ids),
        split_rows={SPLIT_NAMES[s]: int((split == s).sum()) for s in (TRAIN, VAL, TEST)},
        excluded=excluded,
        metrics=classification_metrics(codes[test.cpu().numpy()], probs, classes) | extra,
        embeddings=emb,
        codes=codes,
    )


def _trainable(
    ds: AlignedDataset, opts: ClassifierOptions
) -> tuple[AlignedDataset, dict[str, int], list[str], torch.Tensor, np.ndarray]:
    """The usable rows of ``ds``, the counts left out, the classes, the label codes and the
    id-hash split; an InvalidInputError when there is nothing to train a classifier on."""
    rows, excluded = usable_rows(ds, opts.inputs)
    if len(rows) == 0:
        raise InvalidInputError(
            f"no rows to train on: {excluded['unlabelled']} have no {opts.label!r} label and "
            f"{excluded['no_input']} have none of the inputs {opts.inputs}"
        )
    ds = ds.subset(rows)
    classes = sorted({lab for lab in ds.labels or [] if lab is not None})
    if len(classes) < 2:
        raise InvalidInputError(
            f"a classifier needs at least 2 classes of {opts.label!r}; the labelled rows "
            f"have {classes}"
        )
    codes_t, classes = ds.label_codes(classes)
    split = assign_splits(ds.ids, opts.split)
    if not (split == TRAIN).any():
        raise InvalidInputError(f"the id-hash split left no training rows of {len(ds)}")
    return ds, excluded, classes, codes_t, split


def _check_dp(opts: ClassifierOptions, split: np.ndarray, world: World) -> None:
    """Differential privacy needs validation rows, one process and a budget it can meet."""
    if opts.dp is None:
        return
    if not (split == VAL).any():
        raise InvalidInputError(
            "differential privacy needs validation rows for early stopping (the training "
            "rows are the protected ones); ingest more records or give split= a larger "
            "validation share"
        )
    if world.distributed:
        raise InvalidInputError(
            "dp with distributed data parallel is not supported; train a private head "
            "in one process"
        )
    privacy.check_budget(opts.dp, int((split == TRAIN).sum()))


def _model(dims: dict[str, int], n_classes: int, opts: ClassifierOptions) -> FusionClassifier:
    """A fresh classifier, its weights drawn from ``opts.seed``."""
    torch.manual_seed(opts.seed)
    return FusionClassifier(
        dims,
        n_classes,
        fusion=opts.fusion,
        hidden=opts.hidden,
        mlp_hidden=opts.mlp_hidden,
        dropout=opts.dropout,
        modality_dropout=opts.modality_dropout,
    )


@dataclass
class _Run:
    """What one training run's epochs share: the network trained (DDP- or Opacus-wrapped
    ``model``), its optimizer, the DP engine if any, and this rank's batches."""

    net: nn.Module
    optim: torch.optim.Optimizer
    private: privacy.Private | None
    train: torch.Tensor
    opts: ClassifierOptions
    world: World
    shards: Shards | None
    gen: torch.Generator

    def batches(self, epoch: int) -> Iterator[torch.Tensor]:
        if self.private is not None:
            yield from self.private.batches(self.train.device)
            return
        if self.shards is not None:
            order = self.shards.epoch(self.opts.seed, epoch)
            size = self.world.rank_batch(self.opts.batch_size)
        else:
            order = self.train[
                torch.randperm(len(self.train), generator=self.gen).to(self.train.device)
            ]
            size = self.opts.batch_size
        for start in range(0, len(order), size):
            yield order[start : start + size]

    def epoch(
        self, epoch: int, x: dict[str, torch.Tensor], m: dict[str, torch.Tensor], y: torch.Tensor
    ) -> float:
        """One epoch of minibatches; the mean training loss over every rank."""
        self.net.train()
        total, seen = 0.0, 0.0
        for idx in self.batches(epoch):
            logits = self.net({f: t[idx] for f, t in x.items()}, {f: t[idx] for f, t in m.items()})
            loss = F.cross_entropy(logits, y[idx])
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            self.optim.step()  # under DP also on an empty Poisson batch: noise only
            if len(idx):
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
        total, seen = self.world.sum(total), self.world.sum(seen)
        return total / seen if seen else float("nan")


def _start(
    model: FusionClassifier,
    train: torch.Tensor,
    opts: ClassifierOptions,
    world: World,
    shards: Shards | None,
) -> tuple[_Run, dict[str, Any]]:
    """The optimizer and the wrapping of ``model`` (Opacus for dp, DDP in a process group),
    with what the metrics say of the world."""
    optim: torch.optim.Optimizer = torch.optim.AdamW(
        model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay
    )
    gen = torch.Generator().manual_seed(opts.seed)
    net: nn.Module = model
    private = None
    extra: dict[str, Any] = {}
    if opts.dp is not None:
        private = privacy.make_private(
            model,
            optim,
            train,
            opts.dp,
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            seed=opts.seed,
        )
        net, optim = private.module, private.optimizer
    elif shards is not None:
        from torch.nn.parallel import DistributedDataParallel

        cuda = train.device.type == "cuda"
        net = DistributedDataParallel(model, device_ids=[train.device] if cuda else None)
        extra["distributed"] = world.describe() | {
            "rank_batch_size": world.rank_batch(opts.batch_size),
            "sharding": "record_hash",
            "shard_rows": shards.sizes,
        }
    elif world.engine is not None:  # a launcher's world of one: no DDP, but say so
        extra["distributed"] = world.describe()
    return _Run(net, optim, private, train, opts, world, shards, gen), extra


def _loop(
    model: FusionClassifier,
    x: dict[str, torch.Tensor],
    m: dict[str, torch.Tensor],
    y: torch.Tensor,
    train: torch.Tensor,
    val: torch.Tensor,
    opts: ClassifierOptions,
    world: World,
    shards: Shards | None = None,
) -> tuple[list[dict[str, Any]], int, dict[str, torch.Tensor], dict[str, Any]]:
    """Epochs of shuffled minibatches (index tensors into the in-memory inputs, no per-row
    Python), early stopping on validation macro-F1 with ``patience``; in a process group,
    this rank's ``shards`` of the training rows. Also returns what goes into the metrics
    besides the test scores (privacy spent, the world)."""
    run, extra = _start(model, train, opts, world, shards)
    history: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state, waited = -1.0, 0, copy.deepcopy(model.state_dict()), 0
    y_val = y[val].cpu().numpy()
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        # Opacus's per-sample hooks fire with inputs that need no gradient: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        if run.private is not None:
            stack.callback(run.private.close)  # remove its hooks, also on an error
        for epoch in range(1, opts.epochs + 1):
            started = time.perf_counter()
            train_loss = run.epoch(epoch, x, m, y)
            model.eval()
            probs = _probs(model, x, m, val)
            f1 = world.from_rank0(macro_f1(y_val, probs.argmax(1).cpu().numpy()))
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": float(F.nll_loss(probs.clamp_min(1e-12).log(), y[val])),
                    "val_macro_f1": f1,
                    "seconds": time.perf_counter() - started,  # training and validation
                }
            )
            if f1 > best_f1:
                best_f1, best_epoch, waited = f1, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= opts.patience:
                    break
    if run.private is not None:
        extra["privacy"] = run.private.spent(len(history))
    return history, best_epoch, best_state, extra


def _probs(
    model: FusionClassifier,
    x: dict[str, torch.Tensor],
    m: dict[str, torch.Tensor],
    rows: torch.Tensor,
) -> torch.Tensor:
    """Class probabilities of ``rows`` in eval mode, in large batches."""
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            idx = rows[start : start + EVAL_BATCH]
            logits = model({f: t[idx] for f, t in x.items()}, {f: t[idx] for f, t in m.items()})
            out.append(torch.softmax(logits, 1))
    if not out:
        return torch.zeros((0, model.n_classes), device=rows.device)
    return torch.cat(out)
