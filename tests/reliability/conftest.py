"""Shared by the reliability tests: the forkserver their child processes are forked from.

``multiprocessing.get_context("forkserver")`` is one context per process, and its server
starts once, with the preload list set before its first use; so the list is set here,
once, with every module the children need (fast starts, no threads of the test process
inherited)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import ForkServerContext

import pytest

PRELOAD = [
    "mmstore",
    "mmstore.storage.atomic",
    "mmstore.testing",
    "tests.reliability.crashing",
    "tests.reliability.faults",
    "tests.reliability.test_r8_io_faults",
    "tests.reliability.writing",
]


@pytest.fixture(scope="session")
def forkserver() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx
