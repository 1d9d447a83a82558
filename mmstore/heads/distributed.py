"""Distributed data parallel training of classifier heads under ``torchrun``.

Launch (every rank opens the store read-only and reads the same aligned dataset; the
training rows are sharded by rank; rank 0 writes the head)::

    torchrun --nproc-per-node 2 -m mmstore.heads.distributed STORE COLLECTION NAME \\
        --inputs a,b --label label [--fusion concat] [--epochs 100] [--batch-size 128] \\
        [--option key=json ...]

or from Python inside a process that torchrun started: :func:`train_head_distributed`.

How it works:

- the process group is initialized from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): ``gloo`` on CPU, ``nccl`` when the
  head trains on CUDA (each rank on ``cuda:LOCAL_RANK``);
- every rank opens the store **read-only** (DuckDB allows one writer but many readers) and
  builds the same dataset, id-hash split and seeded initial weights; the model is wrapped
  in ``DistributedDataParallel``, which also broadcasts rank 0's weights;
- each epoch the training rows are permuted with a generator seeded by ``seed + epoch``
  (the same permutation on every rank), padded by repetition to a multiple of the world
  size and dealt out ``rank::world_size`` (what ``DistributedSampler`` does, on the
  in-memory index tensor); a rank's batch is ``ceil(batch_size / world_size)`` so the
  global batch stays about ``batch_size``; gradients are averaged by DDP;
- validation runs on the full validation split on every rank (the weights are identical),
  and rank 0's macro-F1 is broadcast so that early stopping stops every rank together;
  train losses are summed across ranks for the history;
- only rank 0 writes the head. A head is files under ``<store>/heads/<collection>/<name>/``
  (safetensors, head.json, PNGs), not catalog rows, so rank 0 writes it with the store open
  read-only; ``head.json`` records ``metrics.distributed`` (``world_size``, ``backend``,
  ``rank_batch_size``).

Differential privacy with DDP is refused (train DP heads in one process)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import distributed as dist

if TYPE_CHECKING:
    from mmstore.heads import HeadReport


@dataclass(frozen=True)
class World:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def rank_batch(self, batch_size: int) -> int:
        return max(1, math.ceil(batch_size / self.size))

    def shard(self, train: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
        """This rank's rows of ``train`` for ``epoch``: a permutation seeded by
        ``seed + epoch``, padded by repetition to a multiple of the world size, strided."""
        gen = torch.Generator().manual_seed(seed + epoch)
        order = train[torch.randperm(len(train), generator=gen).to(train.device)]
        total = math.ceil(len(order) / self.size) * self.size
        if total > len(order):
            reps = math.ceil(total / len(order))
            order = order.repeat(reps)[:total]
        return order[self.rank : total : self.size]

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t.item())

    def from_rank0(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.broadcast(t, src=0)
        return float(t.item())

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.size, "backend": self.backend}

    def _device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def current() -> World:
    """The initialized process group's world, or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(
            rank=dist.get_rank(),
            size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            backend=str(dist.get_backend()),
        )
    return World()


def launched() -> bool:
    """Whether torchrun (or another launcher) set this process's rank environment."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init(device: str = "auto") -> tuple[World, bool]:
    """Join the process group from the environment unless already in one; return the world
    and whether this call initialized it (and so should destroy it)."""
    if dist.is_available() and dist.is_initialized():
        return current(), False
    if not launched():
        return World(), False
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=10))
    return current(), True


def train_head_distributed(
    store: str | Path, collection: str, name: str, **options: Any
) -> HeadReport | None:
    """Train a classifier head with DDP across the torchrun ranks; rank 0 writes it and
    returns its report, the other ranks return None. Outside torchrun: one process."""
    import mmstore
    from mmstore.config import check_name
    from mmstore.errors import UnknownNameError
    from mmstore.heads import train_head
    from mmstore.heads.options import ClassifierOptions, parse_options
    from mmstore.heads.train import fit_classifier

    opts: ClassifierOptions = parse_options(ClassifierOptions, "classifier", options)
    check_name("head", name)
    world, owned = init(opts.device)
    try:
        report = None
        with mmstore.open(store, read_only=True) as st:
            col = st.collection(collection)
            for f in opts.inputs:
                if f not in col.active:
                    raise UnknownNameError(
                        "field", f, col.active, hint=f"collection {collection!r}"
                    )
            # every rank trains (the collectives need them all); rank 0 also writes. If a
            # rank fails, torchrun stops the others.
            if world.rank == 0:
                report = train_head(col, name, "classifier", **options)
            else:
                ds = col.dataset(inputs=opts.inputs, label=opts.label, where=opts.where)
                fit_classifier(ds, opts)
            world.sum(0.0)  # the other ranks wait for rank 0's head to be in place
        return report
    finally:
        if owned:
            dist.destroy_process_group()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m mmstore.heads.distributed",
        description="Train a classifier head with distributed data parallel under torchrun.",
    )
    p.add_argument("store", help="the store's folder (opened read-only by every rank)")
    p.add_argument("collection")
    p.add_argument("name", help="the head's name")
    p.add_argument("--inputs", required=True, help="comma-separated input fields")
    p.add_argument("--label", default="label")
    p.add_argument("--fusion", default="concat", choices=["concat", "mean", "attention"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any other classifier option, its value as JSON (repeatable), e.g. lr=0.003",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    options: dict[str, Any] = {
        "inputs": [f for f in args.inputs.split(",") if f],
        "label": args.label,
        "fusion": args.fusion,
    }
    for key, attr in (
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("seed", "seed"),
        ("device", "device"),
    ):
        if getattr(args, attr) is not None:
            options[key] = getattr(args, attr)
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--option {item!r}: expected KEY=JSON", file=sys.stderr)
            return 2
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    from mmstore.errors import MMStoreError

    try:
        report = train_head_distributed(args.store, args.collection, args.name, **options)
    except MMStoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if report is not None:
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
