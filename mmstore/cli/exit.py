"""A quiet process exit. Importing ``duckdb_engine`` and ``torch`` into one process makes
DuckDB's nanobind bindings print a spurious "leaked instances" report while the interpreter
tears modules down. Everything is flushed and closed by then, so command-line entry points
end with ``os._exit`` once their work is done, skipping that teardown."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys


def exit_quietly(code: int) -> None:
    """Flush the standard streams and end the process with ``code``, skipping teardown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def exit_quietly_at_exit(code: int) -> None:
    """Register :func:`exit_quietly` to run first among the interpreter's exit handlers."""
    atexit.register(exit_quietly, code)
