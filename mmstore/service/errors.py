"""The service's exception handlers: every error answers with ``{"error", "message"}``
(and ``detail`` for validation), under the status of CONTRACT.md."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mmstore.errors import MMStoreError
from mmstore.service.wire import error_body, jsonable

log = logging.getLogger("mmstore.service.app")
_HTTP_NAMES = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 413: "PayloadTooLarge"}


async def mmstore_error(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, MMStoreError)
    return JSONResponse(error_body(e), status_code=e.http_status)


async def invalid(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, RequestValidationError)
    errs = jsonable([{k: v for k, v in x.items() if k != "ctx"} for x in e.errors()])
    msg = "; ".join(f"{'.'.join(map(str, x.get('loc', ())))}: {x.get('msg')}" for x in e.errors())
    return JSONResponse(
        {"error": "ValidationError", "message": msg or "invalid request", "detail": errs},
        status_code=422,
    )


async def http_error(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, HTTPException)
    name = _HTTP_NAMES.get(e.status_code, "HTTPError")
    detail = e.detail
    body = (
        {"error": detail.get("error", name), "message": str(detail.get("message", ""))}
        if isinstance(detail, dict)
        else {"error": name, "message": str(detail)}
    )
    return JSONResponse(body, status_code=e.status_code, headers=getattr(e, "headers", None))


async def crash(request: Request, e: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "InternalError", "message": str(e)}, status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MMStoreError, mmstore_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crash)
