"""Distributed data parallel training of classifier heads: a rank's place in the process
group (:class:`World`), the shards of the training rows, joining and initializing the group,
and the checks of a request before any rank starts. The launchers that open a store and run
the ranks are in :mod:`mmstore.distributed` (torchrun and Ray Train).

How it works:

- the process group is initialized by the launcher's side: from torchrun's environment
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) here, by
  ``ray.train.torch`` under Ray; ``gloo`` on CPU, ``nccl`` when the head trains on CUDA;
- every rank opens the store **read-only** (DuckDB allows one writer but many readers) and
  builds the same dataset, id-hash split and seeded initial weights; the model is wrapped
  in ``DistributedDataParallel``, which also broadcasts rank 0's weights;
- a training row belongs to rank ``hash(record id) mod world_size`` (a salted blake2b,
  independent of the split's hash), so a record trains on the same rank in every epoch and
  run. Each epoch a rank permutes its rows (seeded by ``seed + epoch``) and pads them by
  repetition to the largest shard's length, so that every rank runs the same number of
  steps; a rank's batch is ``ceil(batch_size / world_size)`` so the global batch stays
  about ``batch_size``; gradients are averaged by DDP;
- validation runs on the full validation split on every rank (the weights are identical),
  and rank 0's macro-F1 is broadcast so that early stopping stops every rank together;
  train losses are summed across ranks for the history;
- only rank 0 writes the head. A head is files under ``<store>/heads/<collection>/<name>/``
  (safetensors, head.json, PNGs), not catalog rows, so rank 0 writes it with the store open
  read-only; ``head.json`` records ``metrics.distributed`` (``engine``, ``world_size``,
  ``backend``, ``rank_batch_size``, ``sharding``, ``shard_rows``).

Differential privacy with DDP is refused (train DP heads in one process)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import distributed as dist

from mmstore.errors import InvalidInputError

if TYPE_CHECKING:
    from mmstore.heads.options import ClassifierOptions
    from mmstore.state import CollectionState

SHARD_SALT = b"mmstore.shard"  # blake2b person: shard hashes independent of split hashes


@dataclass(frozen=True)
class World:
    """This process's place in the process group (rank 0 of 1 when not distributed).
    ``local_rank`` is the CUDA device index the rank trains on; ``engine`` the launcher
    (``"torchrun"`` or ``"ray"``; None outside one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    engine: str | None = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def rank_batch(self, batch_size: int) -> int:
        return max(1, math.ceil(batch_size / self.size))

    def shards(self, train: torch.Tensor, ids: Sequence[str]) -> Shards:
        """Deal the training rows ``train`` (their record ids ``ids``) out by record hash."""
        owner = torch.from_numpy(shard_owners(ids, self.size)).to(train.device)
        sizes = torch.bincount(owner, minlength=self.size).tolist()
        if min(sizes) == 0:
            raise InvalidInputError(
                f"sharding {len(train)} training rows by record hash over {self.size} ranks "
                f"left a rank none (rows per rank: {sizes}); train with fewer workers or in "
                "one process"
            )
        return Shards(rows=train[owner == self.rank], longest=max(sizes), sizes=sizes)

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
        return {"engine": self.engine, "world_size": self.size, "backend": self.backend}

    def _device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


@dataclass(frozen=True)
class Shards:
    """This rank's training rows, and the length every rank pads its epoch to."""

    rows: torch.Tensor
    longest: int
    sizes: list[int]

    def epoch(self, seed: int, epoch: int) -> torch.Tensor:
        """This rank's rows for ``epoch``: permuted with a generator seeded by ``seed +
        epoch``, padded by repetition to ``longest`` (equal step counts on every rank)."""
        gen = torch.Generator().manual_seed(seed + epoch)
        order = self.rows[torch.randperm(len(self.rows), generator=gen).to(self.rows.device)]
        reps = math.ceil(self.longest / len(order))
        return order.repeat(reps)[: self.longest]


def shard_owners(ids: Sequence[str], size: int) -> Any:
    """Per record id, the rank that trains on it: a salted blake2b of the id mod ``size``."""
    import numpy as np

    def owner(record_id: str) -> int:
        digest = hashlib.blake2b(record_id.encode(), digest_size=8, person=SHARD_SALT)
        return int.from_bytes(digest.digest(), "big") % size

    return np.fromiter((owner(i) for i in ids), np.int64, count=len(ids))


_ACTIVE: ContextVar[World | None] = ContextVar("mmstore_heads_world", default=None)


def current() -> World:
    """The world training runs in: the one :func:`train_rank` joined, else the initialized
    process group's, else a world of one."""
    active = _ACTIVE.get()
    if active is not None:
        return active
    if dist.is_available() and dist.is_initialized():
        return _from_process_group("torchrun" if launched() else None)
    return World()


@contextlib.contextmanager
def joined(world: World) -> Iterator[World]:
    """Make ``world`` what :func:`current` returns (to the training loop) inside the block."""
    token = _ACTIVE.set(world)
    try:
        yield world
    finally:
        _ACTIVE.reset(token)


def _from_process_group(engine: str | None) -> World:
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=str(dist.get_backend()),
        engine=engine,
    )


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


def parse_request(name: str, options: dict[str, Any], engine: str) -> ClassifierOptions:
    """Validate a distributed classifier request before any rank starts: the options, the
    head's name, and no differential privacy."""
    from mmstore.config import check_name
    from mmstore.heads.options import ClassifierOptions, parse_options

    opts: ClassifierOptions = parse_options(ClassifierOptions, "classifier", options)
    check_name("head", name)
    if opts.dp is not None:
        raise InvalidInputError(
            f"dp with distributed data parallel ({engine}) is not supported; train a private "
            "head in one process: col.train_head(..., dp=...)"
        )
    return opts


def check_inputs(col: CollectionState, inputs: Sequence[str]) -> None:
    """Every input is an active field of the collection (UnknownNameError otherwise)."""

    for f in inputs:
        if f not in col.active:
            raise col.no_field(f, col.active, hint=f"collection {col.name!r}")
