"""JSON out of the service: plain values (datetimes as ISO strings, bytes as
``{"$base64"}``, arrays as lists, non-finite floats as null), and the error body every
failure is answered with. What comes in is decoded by :func:`mmstore.wire.decode`, the
codec the client encodes with; this module re-exports it as ``decode_values``."""

from __future__ import annotations

import base64
import datetime as dt
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from mmstore.errors import MMStoreError, RecordError
from mmstore.wire import decode as decode_values

__all__ = ["decode_values", "error_body", "jsonable"]


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
