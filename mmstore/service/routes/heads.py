"""``/collections/{c}/heads`` and ``/jobs``: train a head as a job, list heads, predict."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from mmstore.errors import NotFoundError
from mmstore.service import limits
from mmstore.service.context import SERVICE, Service, need
from mmstore.service.models import ERRORS, JobOut, PredictBody, TrainBody
from mmstore.service.wire import decode_values, jsonable

router = APIRouter(tags=["heads"], responses=ERRORS)


@router.post("/collections/{c}/heads", status_code=202, dependencies=[need("write")])
def train_head(c: str, body: TrainBody, s: Service = SERVICE) -> dict[str, str]:
    """Start training a head as a background job; poll ``GET /jobs/{id}``."""
    options = decode_values(dict(body.model_extra or {}))
    s.col(c)  # an unknown collection is a 404 now, not a failed job

    def run() -> dict[str, Any]:
        report = s.write(lambda: s.col(c).train_head(body.name, body.kind, **options))
        return jsonable(asdict(report))  # the client rebuilds the HeadReport from it

    job = s.jobs.submit("train_head", run, collection=c)
    return {"job": job.id}


@router.get("/jobs/{id}", dependencies=[need("write")], response_model=JobOut)
def job_status(id: str, s: Service = SERVICE) -> Any:
    job = s.jobs.get(id)
    if job is None:
        raise NotFoundError(
            f"no job {id!r} on this service, which holds {s.jobs.count()} job(s); a job id "
            "is the whole string POST /collections/{c}/heads returned (such as "
            "'2-3f9ac01d5e7b'), and jobs are kept in the store's catalog"
        )
    return job.to_dict()


@router.get("/collections/{c}/heads", dependencies=[need("read")])
def list_heads(c: str, s: Service = SERVICE) -> dict[str, Any]:
    return {"heads": jsonable(s.col(c).heads())}


@router.post("/collections/{c}/heads/{name}/predict", dependencies=[need("read")])
def predict(c: str, name: str, body: PredictBody, s: Service = SERVICE) -> dict[str, Any]:
    s.too_many("records", len(body.records))
    records = decode_values(body.records)
    news = [r for r in records if isinstance(r, dict)]
    limits.check_records(news, s.modalities(c), s.settings, skip=False)
    out = s.col(c).predict(name, records, on_error=body.on_error)
    return {"predictions": jsonable(out)}
