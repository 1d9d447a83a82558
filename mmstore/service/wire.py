"""JSON on the wire: plain values out (datetimes as ISO strings, bytes as ``{"$base64"}``,
arrays as lists, non-finite floats as null), ``{"$base64"}`` back to bytes in, and the
error body every failure is answered with."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from mmstore.errors import InvalidInputError, RecordError


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


def decode_values(obj: Any) -> Any:
    """``{"$base64": "..."}`` anywhere in a JSON value becomes bytes; the rest as given."""
    if isinstance(obj, dict):
        if set(obj) == {"$base64"}:
            try:
                return base64.b64decode(obj["$base64"], validate=True)
            except (binascii.Error, TypeError, ValueError) as e:
                raise InvalidInputError(f"invalid $base64 value: {e}") from None
        return {k: decode_values(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_values(v) for v in obj]
    return obj


def error_body(e: BaseException) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(e).__name__, "message": str(e)}
    if isinstance(e, RecordError):
        body["record"] = jsonable(e.record_id)
        if e.field:
            body["field"] = e.field
    return body
