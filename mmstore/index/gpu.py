"""Exact search on a GPU: a field's vectors mirrored into device memory as one matrix, scored
by a matrix product and ``topk``. On a GPU an exact scan of millions of vectors takes well
under a millisecond per query batch, so no approximate graph is needed there, and recall is
1.0.

The mirror uses PyTorch's CUDA tensors rather than FAISS's GPU indexes: the ``faiss-gpu``
wheel links the CUDA 12 runtime while the pinned PyTorch ships CUDA 13, so one process
cannot rely on both; PyTorch's CUDA is already there wherever mmstore encodes on a GPU.
On a host with several GPUs (as FAISS counts them) the mirror is FAISS's instead, replicated
or sharded over them (:mod:`mmstore.index.multigpu`); the layout is in the index's parameters.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: where mirrors live; tests set "cpu" to run the same code without a GPU
MIRROR_DEVICE = "cuda"


@functools.cache
def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA device (asked once per process). Without an NVIDIA
    device node, the answer is no without importing torch, which costs a store's first
    search about 1.7 s and 500 MB on a machine with no GPU."""
    if "torch" not in sys.modules and not _nvidia_devices():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _nvidia_devices() -> bool:
    """Whether the NVIDIA driver exposes a device to this process (Linux device nodes),
    or might (another system: let torch decide)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path("/dev").glob("nvidia[0-9]*"))


def resolve(device: str) -> str:
    """``auto`` means ``cuda`` when a GPU is visible, else ``cpu``."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        from mmstore.errors import ConfigError

        raise ConfigError("index device 'cuda' was asked for, but PyTorch sees no CUDA device")
    return device


def out_of_memory() -> tuple[type[BaseException], ...]:
    """The out-of-memory error classes of PyTorch's CUDA and of FAISS's GPU indexes."""
    import torch

    from mmstore.errors import GpuMemoryError

    return torch.OutOfMemoryError, GpuMemoryError


def mirror(dim: int) -> Any:
    """A new, empty mirror for this host: FAISS's replicas or shards over several GPUs,
    else PyTorch's on one."""
    from mmstore.index import multigpu

    if multigpu.gpu_count() >= 2:
        return multigpu.FaissMirror(dim)
    return GpuMirror(dim)


def layout(mirror: Any, size: int, dim: int, device: str) -> dict[str, Any] | None:
    """The GPU layout of an index, for its parameters: the mirror's once it exists, else
    what this host would choose now (None where searches run on the CPU)."""
    from mmstore.index import multigpu

    if mirror is not None:
        return mirror.layout.as_dict() | {"active": True}
    if device == "cpu" or not cuda_available():
        return None
    n = max(multigpu.gpu_count(), 1)
    try:
        free = multigpu.free_memory(n)
    except (RuntimeError, AssertionError):  # PyTorch's CUDA could not start after all
        return None
    return multigpu.choose_layout(size, dim, free, n).as_dict() | {"active": False}


class GpuMirror:
    """The index's vectors (by position) and tombstones in GPU memory, appended to as the
    index grows (in a buffer that doubles, so an append copies only the new rows); rebuilt
    only when positions change (compaction). One lock serializes sync and search."""

    def __init__(self, dim: int, device: str | None = None) -> None:
        import torch

        self.torch = torch
        self.dim = dim
        self.device = device or MIRROR_DEVICE
        self.lock = threading.Lock()
        self.buffer = torch.empty((0, dim), dtype=torch.float32, device=self.device)
        self.rows = 0
        self.penalty: Any = None  # -inf at tombstoned positions, or None when there are none
        self.penalty_len = 0
        self.synced_dead = -1

    @property
    def size(self) -> int:
        return self.rows

    @property
    def layout(self) -> Any:
        """One GPU, holding every row (the buffer's capacity may be larger)."""
        from mmstore.index.multigpu import Layout

        return Layout("single", 1, self.rows * self.dim * 4, True)

    @property
    def matrix(self) -> Any:
        return self.buffer[: self.rows]

    def sync(self, rows: Callable[[int, int], np.ndarray], size: int, dead: np.ndarray) -> None:
        """Copy rows ``[self.size, size)`` and, when it changed, the tombstone mask."""
        torch = self.torch
        if size > self.rows:
            fresh = torch.from_numpy(np.ascontiguousarray(rows(self.rows, size)))
            if size > self.buffer.shape[0]:
                grown = torch.empty(
                    (max(size, 2 * self.buffer.shape[0]), self.dim),
                    dtype=torch.float32,
                    device=self.device,
                )
                grown[: self.rows] = self.buffer[: self.rows]
                self.buffer = grown
            self.buffer[self.rows : size] = fresh.to(self.device)
            self.rows = size
        n_dead = int(dead.sum())
        if n_dead != self.synced_dead or len(dead) != self.penalty_len:
            # an additive mask (0 or -inf): one fused add per search, no boolean indexing
            mask = torch.from_numpy(np.where(dead, -np.inf, 0.0).astype(np.float32))
            self.penalty = mask.to(self.device) if n_dead else None
            self.penalty_len, self.synced_dead = len(dead), n_dead

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` live positions by inner product: scores (float32) and positions (-1
        where fewer than ``k`` live vectors exist)."""
        torch = self.torch
        with torch.inference_mode():
            q = torch.from_numpy(queries).to(self.device, torch.float32)
            scores = q @ self.matrix.T
            if self.penalty is not None:
                scores += self.penalty
            kk = min(k, self.size)
            top, pos = torch.topk(scores, kk, dim=1)
            both = torch.cat([top.double(), pos.double()], 1).cpu().numpy()  # one copy back
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_p = np.full((len(queries), k), -1, np.int64)
        out_s[:, :kk] = both[:, :kk]
        out_p[:, :kk] = both[:, kk:].astype(np.int64)
        out_p[~np.isfinite(out_s)] = -1
        return out_s, out_p
