"""Background jobs (head training): an in-memory table of jobs, each run in its own daemon
thread; statuses queued -> running -> done | failed. Jobs do not survive a restart."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: str
    kind: str
    status: str = "queued"
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished: dt.datetime | None = None
    error: dict[str, Any] | None = None
    report: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "created": self.created.isoformat(),
        }
        if self.finished is not None:
            out["finished"] = self.finished.isoformat()
        if self.error is not None:
            out["error"] = self.error
        if self.report is not None:
            out["report"] = self.report
        return out


class JobTable:
    """Jobs by id. ``submit(kind, fn)`` runs ``fn()`` in a thread; its return value becomes
    the job's report, an exception its error (``describe_error(exc)``)."""

    def __init__(self, describe_error: Callable[[BaseException], dict[str, Any]]) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._describe = describe_error
        self._seq = itertools.count(1)
        self._threads: list[threading.Thread] = []

    def submit(self, kind: str, fn: Callable[[], Any]) -> Job:
        job = Job(id=f"{next(self._seq)}-{uuid.uuid4().hex[:12]}", kind=kind)
        with self._lock:
            self._jobs[job.id] = job
        t = threading.Thread(
            target=self._run, args=(job, fn), name=f"mmstore-job-{job.id}", daemon=True
        )
        self._threads.append(t)
        t.start()
        return job

    def _run(self, job: Job, fn: Callable[[], Any]) -> None:
        job.status = "running"
        try:
            job.report = fn()
            job.status = "done"
        except BaseException as e:  # a job's failure is its status
            log.warning("job %s failed: %s", job.id, e)
            job.error = self._describe(e)
            job.status = "failed"
        finally:
            job.finished = dt.datetime.now(dt.UTC)

    def count(self) -> int:
        with self._lock:
            return len(self._jobs)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running jobs (used on shutdown and in tests)."""
        for t in list(self._threads):
            t.join(timeout)
