"""One thread pool per process for decoding and resampling, which release the GIL
(libsndfile through cffi, scipy's polyphase filter, numpy)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
#: most threads used, whatever the number of cores
MAX_WORKERS = 8
_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def workers() -> int:
    """Threads to use: the cores this process may run on, at most ``MAX_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def pmap(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, in the pool when there are several items and cores;
    the first exception raised is re-raised."""
    if len(items) < 2 or workers() < 2:
        return [fn(x) for x in items]
    return list(_pool().map(fn, items))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(workers(), thread_name_prefix="mmstore-audio")
        return _POOL
