"""The R8 child for faults in system calls, DuckDB's included: run with the shim of
``syscalls.c`` preloaded (``LD_PRELOAD``), it fails the n-th ``write``, ``pwrite``,
``fsync``, ``fdatasync`` or ``ftruncate`` on a store file during a cycle
(:func:`faults.cycle`) with ENOSPC or EIO, once or from then on, then lifts the fault and
checks the store (:func:`faults.check_after`). Results are written as JSON at the end.

Usage: ``python -m tests.reliability.syscall_child SHIM TEMPLATE WORKDIR OUT.json``."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from tests.reliability import faults

#: the shim's function numbers
FUNCTIONS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate")
POSITIONS = 4  # per function: the first, the last and evenly between


class Shim:
    """The preloaded library, driven through ctypes (plain C calls, no callbacks)."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))  # the preloaded copy: same handle
        self.lib.shim_root.argtypes = [ctypes.c_char_p]
        self.lib.shim_plan.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_int, ctypes.c_int]
        self.lib.shim_count.restype = ctypes.c_long
        self.lib.shim_fired.restype = ctypes.c_long

    def armed_cycle(self, path: Path, plan: tuple[str, int, int, bool] | None) -> faults.Outcome:
        """One cycle on ``path`` with ``plan`` (function, nth, errno, always) armed."""
        self.lib.shim_root(str(path.resolve()).encode())
        function, nth, number, always = plan or ("write", -1, 0, False)
        self.lib.shim_plan(FUNCTIONS.index(function), nth, number, int(always))
        self.lib.shim_arm(1)
        try:
            return faults.cycle(path, 1, retry=True)
        finally:
            self.lib.shim_arm(0)

    def counts(self) -> dict[str, int]:
        return {f: int(self.lib.shim_count(i)) for i, f in enumerate(FUNCTIONS)}

    def fired(self) -> int:
        return int(self.lib.shim_fired())


def positions(count: int) -> list[int]:
    if count <= POSITIONS:
        return list(range(count))
    step = (count - 1) / (POSITIONS - 1)
    return sorted({round(i * step) for i in range(POSITIONS)})


def run(shim: Shim, template: Path, work: Path) -> dict[str, Any]:
    dry = work / "dry"
    shutil.copytree(template, dry)
    out = shim.armed_cycle(dry, None)
    counted = shim.counts()
    faults.check_after(dry, 1, out)
    results = []
    for function, count in counted.items():
        numbers = [errno.EIO] if "sync" in function else [errno.ENOSPC, errno.EIO]
        for nth in positions(count):
            for number in numbers:
                for always in (False, True):
                    results.append(scenario(shim, template, work, (function, nth, number, always)))
    return {"counts": counted, "dry": out.steps, "results": results}


def scenario(
    shim: Shim, template: Path, work: Path, plan: tuple[str, int, int, bool]
) -> dict[str, Any]:
    function, nth, number, always = plan
    path = work / f"{function}-{nth}-{number}-{int(always)}"
    shutil.copytree(template, path)
    out = shim.armed_cycle(path, plan)
    row: dict[str, Any] = {
        "function": function,
        "nth": nth,
        "errno": errno.errorcode[number],
        "always": always,
        "fired": shim.fired(),
        "steps": out.steps,
    }
    try:
        row["batch"] = faults.check_after(path, 1, out)
    except AssertionError as e:
        row["check_failed"] = str(e)
    except Exception as e:  # the store did not open, or ingest failed with the disk back
        row["check_failed"] = f"{type(e).__name__}: {e}"
    shutil.rmtree(path, ignore_errors=True)
    return row


def main() -> None:
    shim_path, template, work, result = (Path(a) for a in sys.argv[1:5])
    logging.disable(logging.CRITICAL)  # the warnings of tolerated faults are expected
    data = run(Shim(shim_path), template, work)
    result.write_text(json.dumps(data))
    from mmstore.cli.exit import exit_quietly

    exit_quietly(0)


if __name__ == "__main__":
    os.environ.pop("LD_PRELOAD", None)  # not for processes this one starts
    main()
