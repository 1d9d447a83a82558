"""Distributed data parallel training of a classifier head under torchrun: every rank opens
the store read-only and reads the same aligned dataset; the training rows are sharded by
record hash; rank 0 writes the head (:mod:`mmstore.heads.distributed` says how)::

    torchrun --nproc-per-node 2 -m mmstore.distributed.torchrun STORE COLLECTION NAME \\
        --inputs a,b --label label [--fusion concat] [--epochs 100] [--batch-size 128] \\
        [--option key=json ...]

or from Python inside a process that torchrun started: :func:`train_head_distributed`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import distributed as dist

from mmstore.distributed.rank import train_rank
from mmstore.errors import MMStoreError
from mmstore.heads import HeadReport
from mmstore.heads.distributed import init, parse_request


def train_head_distributed(
    store: str | Path, collection: str, name: str, **options: Any
) -> HeadReport | None:
    """Train a classifier head with DDP across the torchrun ranks; rank 0 writes it and
    returns its report, the other ranks return None. Outside torchrun: one process."""
    opts = parse_request(name, options, "torchrun")
    world, owned = init(opts.device)
    try:
        return train_rank(world, store, collection, name, options)
    finally:
        if owned:
            dist.destroy_process_group()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m mmstore.distributed.torchrun",
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
