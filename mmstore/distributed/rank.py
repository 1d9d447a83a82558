"""One rank's part of distributed head training, whatever the launcher: open the store
read-only, train on this rank's shard in the process group; rank 0 writes the head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmstore.datasets.aligned import build_dataset
from mmstore.heads import HeadReport, train_head
from mmstore.heads.distributed import World, check_inputs, joined, parse_request
from mmstore.heads.train import fit_classifier
from mmstore.store import open as open_store


def train_rank(
    world: World, store: str | Path, collection: str, name: str, options: dict[str, Any]
) -> HeadReport | None:
    """One rank's part, whatever the launcher: open the store read-only, train on this
    rank's shard in the process group; rank 0 also writes the head and returns its report,
    the other ranks return None."""
    opts = parse_request(name, options, world.engine or "distributed")
    report = None
    with joined(world), open_store(store, read_only=True) as st:
        col = st.collection(collection)
        check_inputs(col.state, opts.inputs)
        # every rank trains (the collectives need them all); rank 0 also writes. If a rank
        # fails, the launcher stops the others.
        if world.rank == 0:
            report = train_head(col.state, name, "classifier", **options)
        else:
            ds = build_dataset(col.state, opts.inputs, label=opts.label, where=opts.where)
            fit_classifier(ds, opts)
        world.sum(0.0)  # the other ranks wait for rank 0's head to be in place
    return report
