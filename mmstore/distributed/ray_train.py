"""Distributed training of classifier heads through Ray Train's ``TorchTrainer``.

The workers run the same per-rank function as ``torchrun``
(:func:`mmstore.distributed.rank.train_rank`): Ray Train's ``ray.train.torch`` backend
sets up the process group (``gloo`` on CPU, ``nccl`` on GPU), a rank learns its place from
``ray.train.get_context()``, the training rows are sharded by record hash, and rank 0
writes the head and hands its report back as the run's return value. Every worker opens
the store read-only, so the store's folder must be readable by every node (one machine, or
a shared file system) and no process may hold it open for writing.

Ray is optional and imported only here, when called: without it,
:class:`RayUnavailableError` says ``pip install 'mmstore[ray]'``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmstore.errors import RAY_INSTALL, InvalidInputError, MMStoreError, RayUnavailableError

if TYPE_CHECKING:
    from mmstore.heads import HeadReport


def train_head_ray(
    store: str | Path,
    collection: str,
    name: str,
    *,
    num_workers: int = 2,
    use_gpu: bool | None = None,
    address: str | None = None,
    resources_per_worker: dict[str, float] | None = None,
    storage_path: str | None = None,
    **options: Any,
) -> HeadReport:
    """Train a classifier head on ``num_workers`` Ray Train workers; returns rank 0's report.

    ``options`` are :func:`mmstore.heads.train_head`'s (``inputs``, ``label``, ``fusion``,
    ``epochs``...). ``use_gpu`` None means: when the cluster has GPUs and ``device`` is not
    ``"cpu"``. ``address`` joins a running cluster; without it, an already initialized Ray
    is used, else a local one is started and shut down after. ``storage_path`` is where Ray
    Train keeps its run state (a temporary folder by default; shared storage on several
    nodes)."""
    store = Path(store).expanduser().resolve()  # workers run in other folders than this one
    opts = _check(store, collection, name, num_workers, options)
    ray = _import_ray()
    started = _connect(ray, address)
    try:
        gpu = _use_gpu(ray, use_gpu, opts.device)
        worker_options = options | {"device": "cuda" if gpu else "cpu"}
        with tempfile.TemporaryDirectory(prefix="mmstore-ray-") as tmp:
            result = _fit(
                store,
                collection,
                name,
                worker_options,
                num_workers=num_workers,
                gpu=gpu,
                resources=resources_per_worker or ({"CPU": 1, "GPU": 1} if gpu else {"CPU": 1}),
                storage_path=storage_path or tmp,
            )
    finally:
        if started:
            ray.shutdown()
    return result


def _check(
    store: str | Path, collection: str, name: str, num_workers: Any, options: dict[str, Any]
) -> Any:
    """Refuse a bad request before Ray starts: workers, options, name, dp, the inputs."""
    from mmstore.heads.distributed import check_inputs, parse_request
    from mmstore.store import open as open_store

    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidInputError(
            f"num_workers must be a whole number of 1 or more, got {num_workers!r}; give "
            "num_workers=2 or more to train in parallel"
        )
    opts = parse_request(name, options, "Ray Train")
    with open_store(store, read_only=True) as st:
        check_inputs(st.collection(collection).state, opts.inputs)
    return opts


def _import_ray() -> Any:
    """The ``ray`` module with ``ray.train.torch`` loaded, or RayUnavailableError."""
    try:
        import ray
        import ray.train.torch
    except ImportError as e:
        raise RayUnavailableError(
            f"training a head with Ray Train needs ray[train], which is not installed ({e}); "
            f"install it with: {RAY_INSTALL}, or train with torchrun "
            "(python -m mmstore.distributed.torchrun --help)"
        ) from e
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Join ``address``, or use the running Ray, or start a local one; whether we started
    (and so should shut down) one."""
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return True


def _use_gpu(ray: Any, use_gpu: bool | None, device: str) -> bool:
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if use_gpu is None:
        return device != "cpu" and gpus >= 1
    if use_gpu and device == "cpu":
        raise InvalidInputError("use_gpu=True contradicts device='cpu'; drop one of them")
    if not use_gpu and device == "cuda":
        raise InvalidInputError("device='cuda' needs use_gpu=True (or None) with Ray Train")
    return use_gpu


def _fit(
    store: str | Path,
    collection: str,
    name: str,
    options: dict[str, Any],
    *,
    num_workers: int,
    gpu: bool,
    resources: dict[str, float],
    storage_path: str,
) -> HeadReport:
    """Run the TorchTrainer; a worker's mmstore error is raised again as itself."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = {"store": str(store), "collection": collection, "name": name, "options": options}
    worker: Any = _worker  # Ray's stubs expect a loop that returns None
    trainer = TorchTrainer(
        worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(name=f"mmstore-head-{name}", storage_path=storage_path),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        _reraise_worker_error(e)
        raise
    report: HeadReport | None = getattr(result, "return_value", None)
    return report or _report_from_disk(store, collection, name)


def _report_from_disk(store: str | Path, collection: str, name: str) -> HeadReport:
    """Rank 0's report rebuilt from its head.json (a Ray without training return values)."""
    import json

    from mmstore.heads import HeadReport
    from mmstore.heads.artifacts import head_dir
    from mmstore.store import open as open_store

    with open_store(store, read_only=True) as st:
        path = head_dir(st.collection(collection).state, name)
    meta = json.loads((path / "head.json").read_text())
    keys = ("classes", "metrics", "history", "best_epoch", "split_rows", "excluded")
    return HeadReport(
        name=name,
        kind=meta["kind"],
        path=path,
        files={p.stem: p for p in sorted(path.iterdir())},
        **{k: meta[k] for k in keys},
    )


def _reraise_worker_error(error: Exception) -> None:
    """A worker's MMStoreError (lowest rank first) instead of Ray's wrapper, chained."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        if isinstance(cause, MMStoreError):
            raise cause from error


def _worker(config: dict[str, Any]) -> HeadReport | None:
    """``train_loop_per_worker``: this rank's world from Ray Train's context, then the
    per-rank training that torchrun runs too."""
    import ray.train
    import ray.train.torch
    from torch import distributed as dist

    from mmstore.distributed.rank import train_rank
    from mmstore.heads.distributed import World

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    world = World(
        rank=ctx.get_world_rank(),
        size=ctx.get_world_size(),
        local_rank=(device.index or 0) if device.type == "cuda" else ctx.get_local_rank(),
        backend=str(dist.get_backend()) if dist.is_initialized() else None,
        engine="ray",
    )
    return train_rank(
        world, config["store"], config["collection"], config["name"], config["options"]
    )
