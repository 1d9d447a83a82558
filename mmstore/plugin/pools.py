"""Thread pools shared by plugins within a process: decoding images and audio releases the
GIL (Pillow, libsndfile, scipy, numpy), so threads overlap it with the model and with each
other. One pool per name, created on first use, sized to the cores this process may use."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
#: most threads in one pool, whatever the number of cores
MAX_WORKERS = 8
_POOLS: dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def workers(most: int = MAX_WORKERS) -> int:
    """Threads to use: the cores this process may run on, at most ``most``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(most, cores))


def shared_pool(name: str, most: int = MAX_WORKERS) -> ThreadPoolExecutor:
    """The process's pool called ``name`` (threads named ``mmstore-<name>``)."""
    with _LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = ThreadPoolExecutor(
                workers(most), thread_name_prefix=f"mmstore-{name}"
            )
        return pool


def pmap(name: str, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, in pool ``name`` when there are several items and
    cores; the first exception raised is re-raised."""
    if len(items) < 2 or workers() < 2:
        return [fn(x) for x in items]
    return list(shared_pool(name).map(fn, items))
