"""``/collections/{c}/records``: ingest (JSON or multipart with media), get and delete."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from mmstore.service.context import SERVICE, Service, need, validation
from mmstore.service.models import ERRORS, DeleteBody, IngestBody, IngestReportOut
from mmstore.service.wire import FastJSONRoute, JSONBody, decode_values

router = APIRouter(tags=["records"], responses=ERRORS, route_class=FastJSONRoute)

MEDIA_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["records"],
                    "properties": {
                        "records": {"type": "string", "description": "a JSON list of records"},
                        "on_error": {"type": "string", "enum": ["raise", "skip"]},
                    },
                    "additionalProperties": {
                        "type": "string",
                        "format": "binary",
                        "description": "a part named '<record id>/<field>' fills that "
                        "field of that record with the file's bytes",
                    },
                }
            }
        },
    }
}


@router.post(
    "/collections/{c}/records", dependencies=[need("write")], response_model=IngestReportOut
)
def ingest(c: str, body: IngestBody, s: Service = SERVICE) -> Any:
    s.too_many("records", len(body.records))
    return s.ingest_within_limits(c, decode_values(body.records), body.on_error)


@router.post(
    "/collections/{c}/records/media",
    dependencies=[need("write")],
    response_model=IngestReportOut,
    openapi_extra=MEDIA_BODY,
)
async def ingest_media(c: str, request: Request, s: Service = SERVICE) -> Any:
    """Multipart ingest: ``records`` is a JSON list; each file part named
    ``<record id>/<field>`` fills that field of that record with the file's bytes."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise validation("body", "expected multipart/form-data")
    max_files = s.settings.max_batch * 16
    form = await request.form(max_files=max_files, max_fields=max_files)
    try:
        records = _form_records(form, s)
        on_error = _form_on_error(form)
        await _fill_media(form, {str(r.get("id")): r for r in records})
    finally:
        await form.close()
    return await run_in_threadpool(s.ingest_within_limits, c, records, on_error)


def _form_records(form: FormData, s: Service) -> list[dict[str, Any]]:
    raw = form.get("records")
    if not isinstance(raw, str):
        raise validation("records", "a form field 'records' (a JSON list) is required")
    try:
        records = json.loads(raw)
    except json.JSONDecodeError as e:
        raise validation("records", f"not JSON: {e}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise validation("records", "must be a JSON list of objects")
    s.too_many("records", len(records))
    decoded: list[dict[str, Any]] = decode_values(records)
    return decoded


def _form_on_error(form: FormData) -> Literal["raise", "skip"]:
    given = form.get("on_error")
    if given is None or given == "raise":
        return "raise"
    if given == "skip":
        return "skip"
    raise validation("on_error", "must be 'raise' or 'skip'")


async def _fill_media(form: FormData, by_id: dict[str, dict[str, Any]]) -> None:
    """Each file part ``<record id>/<field>`` becomes that field's bytes."""
    for name, part in form.multi_items():
        if not isinstance(part, UploadFile):
            continue
        rid, sep, field = name.rpartition("/")
        if not sep or not rid or not field:
            raise validation(name, "a file part is named '<record id>/<field>'")
        if rid not in by_id:
            raise validation(name, f"no record with id {rid!r} in 'records'")
        by_id[rid][field] = await part.read()


@router.get("/collections/{c}/records", dependencies=[need("read")], response_model=dict[str, Any])
def get_records(
    c: str, ids: str = Query(..., description="comma-separated record ids"), s: Service = SERVICE
) -> JSONBody:
    wanted = [x.strip() for x in ids.split(",") if x.strip()]
    if not wanted:
        raise validation("ids", "give at least one id")
    s.too_many("ids", len(wanted))
    return JSONBody({"records": s.col(c).get(wanted)})


@router.post("/collections/{c}/records/delete", dependencies=[need("write")])
def delete_records(c: str, body: DeleteBody, s: Service = SERVICE) -> dict[str, int]:
    s.too_many("ids", len(body.ids))
    return {"deleted": s.write(lambda: s.col(c).delete(body.ids))}
