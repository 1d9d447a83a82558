"""JSON out of the service: plain values (datetimes as ISO strings, bytes as
``{"$base64"}``, arrays as lists, non-finite floats as null), and the error body every
failure is answered with. What comes in is decoded by :func:`mmstore.wire.decode`, the
codec the client encodes with; this module re-exports it as ``decode_values``.

The hot routes (search, search_many, get) answer a :class:`JSONBody` built by orjson
from plain dicts: the same JSON as :func:`jsonable` gives, without FastAPI validating the
answer against its response model on the way out (the model stays in the OpenAPI
contract, which the schemathesis run R10 checks the answers against). Their request
bodies are parsed by orjson too (:class:`FastJSONRoute`)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Callable, Coroutine
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from mmstore.errors import MMStoreError, RecordError
from mmstore.wire import decode as decode_values

__all__ = [
    "FastJSONRoute",
    "JSONBody",
    "decode_values",
    "dumps",
    "error_body",
    "hit_body",
    "jsonable",
]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def jsonable(obj: Any) -> Any:
    """Plain JSON values: datetimes as ISO strings, bytes as {"$base64"}, arrays as lists."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, BaseModel):
        return jsonable(obj.model_dump())
    return str(obj)


def error_body(e: BaseException) -> dict[str, Any]:
    """``{"error": ClassName, "message"}``, with ``kind``, the nearest class of
    :mod:`mmstore.errors`, for a plugin's own error (a client without the plugin raises
    that one), and ``record``, ``field`` and ``problem`` for a record's error."""
    body: dict[str, Any] = {"error": type(e).__name__, "message": str(e)}
    known = next((c for c in type(e).__mro__ if c.__module__ == "mmstore.errors"), None)
    if isinstance(e, MMStoreError) and known is not None and known is not type(e):
        body["kind"] = known.__name__
    if isinstance(e, RecordError):
        body["record"] = jsonable(e.record_id)
        if e.field:
            body["field"] = e.field
        body["problem"] = e.problem
    return body


def dumps(obj: Any) -> bytes:
    """``obj`` as JSON bytes, as :func:`jsonable` would make it (orjson, and the values it
    does not know by :func:`jsonable`)."""
    try:
        return orjson.dumps(obj, default=jsonable, option=_OPTIONS)
    except TypeError:  # orjson's JSONEncodeError: an int past 64 bits
        return orjson.dumps(jsonable(obj), default=str, option=_OPTIONS)


class JSONBody(Response):
    """A JSON answer rendered by :func:`dumps`."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def hit_body(h: Any) -> dict[str, Any]:
    """A search hit (:class:`mmstore.Hit`) as the service answers it."""
    return {
        "id": h.id,
        "score": h.score,
        "field": h.field,
        "modality": h.modality,
        "label": h.label,
        "ts": h.ts,
        "meta": h.meta,
        "values": h.values,
    }


class _FastJSONRequest(Request):
    async def json(self) -> Any:
        """The body parsed by orjson; by the standard library where orjson refuses it
        (``NaN`` and ``Infinity``, integers past 64 bits), which decides what is malformed
        as before, so that bad values still reach the checks that name their record."""
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = json.loads(body)
        return self._json


class FastJSONRoute(APIRoute):
    """A route whose JSON body is parsed by orjson (the standard library's parser took a
    tenth of the event loop's time at 8 clients sending 384-d vectors)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_FastJSONRequest(request.scope, request.receive))

        return route
