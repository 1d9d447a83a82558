"""A verified file's identity and change times, kept in its manifest row, so that a later
open that finds the file unchanged skips hashing it again (a 1.6 GB index file took most of
a second to hash on every open). The kernel sets a file's ctime to the current time on every
change, and no unprivileged process can set it back, so a change that keeps size and mtime
still shows; only a file quiet for :data:`QUIET_NS` is stamped, so that a change right after
the verification cannot share its timestamp (the kernel's clock for them is coarse, a few
milliseconds). Not caught: bytes that change under the filesystem (a failing disk); a full
check (``store.verify()``) hashes every byte."""

from __future__ import annotations

import os
import time

#: how long a file must have been left alone before its stamp is recorded
QUIET_NS = 2_000_000_000


def of(st: os.stat_result) -> str:
    """The stamp of a file as ``os.stat`` (or ``fstat``) saw it."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def settled(st: os.stat_result) -> bool:
    """Whether the file has been left alone long enough to be stamped."""
    return time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) >= QUIET_NS
