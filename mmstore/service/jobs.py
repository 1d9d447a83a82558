"""Background jobs (head training): each runs in its own daemon thread, with statuses
queued -> running -> done | failed, and every change of status is written to the catalog
(``mms_jobs``) before it is reported. A service that starts marks the jobs an earlier one
left queued or running as ``interrupted``: they stopped with it and kept nothing."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from mmstore.errors import JobInterruptedError
from mmstore.storage import schema
from mmstore.storage.catalog import Catalog

log = logging.getLogger(__name__)
OPEN = ("queued", "running")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Job:
    id: str
    kind: str
    collection: str | None = None
    status: str = "queued"
    created: dt.datetime = field(default_factory=_now)
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
        optional = {"collection": self.collection, "error": self.error, "report": self.report}
        if self.finished is not None:
            optional["finished"] = self.finished.isoformat()
        return out | {k: v for k, v in optional.items() if v is not None}


class JobLog:
    """The jobs of the catalog's ``mms_jobs`` table: written on each change of status,
    read for a job this process does not hold."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def save(self, job: Job) -> None:
        table = schema.jobs
        row = {
            "id": job.id,
            "kind": job.kind,
            "collection": job.collection,
            "status": job.status,
            "created_at": _naive(job.created),
            "finished_at": None if job.finished is None else _naive(job.finished),
            "error": None if job.error is None else json.dumps(job.error),
            "report": None if job.report is None else json.dumps(job.report),
        }
        with self.catalog.transaction("recording a job", publish=False) as conn:
            conn.execute(table.delete().where(table.c.id == job.id))
            conn.execute(table.insert().values(**row))

    def load(self, job_id: str) -> Job | None:
        table = schema.jobs
        with self.catalog.reading() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == job_id)).one_or_none()
        return None if row is None else _job(row)

    def count(self) -> int:
        with self.catalog.reading() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(schema.jobs)).scalar_one()
            )

    def interrupt_open(self) -> int:
        """Mark the jobs left queued or running as interrupted; how many there were."""
        table = schema.jobs
        message = (
            "the service stopped while this job was queued or running (it was killed or shut "
            "down first); nothing of it was kept: start the job again"
        )
        error = {"error": JobInterruptedError.__name__, "message": message}
        with self.catalog.transaction("marking interrupted jobs", publish=False) as conn:
            stale = table.c.status.in_(OPEN)
            n = int(conn.execute(sa.select(sa.func.count()).where(stale)).scalar_one())
            values = {"status": "interrupted", "finished_at": _naive(_now())}
            conn.execute(table.update().where(stale).values(**values, error=json.dumps(error)))
        return n


def _naive(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(tzinfo=None)


def _job(row: Any) -> Job:
    finished = None if row.finished_at is None else row.finished_at.replace(tzinfo=dt.UTC)
    return Job(
        id=row.id,
        kind=row.kind,
        collection=row.collection,
        status=row.status,
        created=row.created_at.replace(tzinfo=dt.UTC),
        finished=finished,
        error=None if row.error is None else json.loads(row.error),
        report=None if row.report is None else json.loads(row.report),
    )


class JobTable:
    """Jobs by id. ``submit(kind, fn)`` runs ``fn()`` in a thread; its return value becomes
    the job's report, an exception its error (``describe_error(exc)``). With a
    :class:`JobLog`, each status is recorded before it is reported."""

    def __init__(
        self,
        describe_error: Callable[[BaseException], dict[str, Any]],
        journal: JobLog | None = None,
    ) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._describe = describe_error
        self._log = journal
        self._seq = itertools.count(1)
        self._threads: list[threading.Thread] = []
        if journal is not None and (n := journal.interrupt_open()):
            log.warning("%d job(s) an earlier service left open are marked interrupted", n)

    def submit(self, kind: str, fn: Callable[[], Any], collection: str | None = None) -> Job:
        job = Job(id=f"{next(self._seq)}-{uuid.uuid4().hex[:12]}", kind=kind, collection=collection)
        self._record(job)
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
            self._record(job)
            job.report = fn()
            job.status = "done"
        except BaseException as e:  # a job's failure is its status
            log.warning("job %s failed: %s", job.id, e)
            job.error = self._describe(e)
            job.status = "failed"
        finally:
            job.finished = _now()
            self._record(job)

    def _record(self, job: Job) -> None:
        if self._log is not None:
            self._log.save(job)

    def count(self) -> int:
        if self._log is not None:
            return self._log.count()
        with self._lock:
            return len(self._jobs)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None and self._log is not None:
            return self._log.load(job_id)
        return job

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running jobs (used on shutdown and in tests)."""
        for t in list(self._threads):
            t.join(timeout)
