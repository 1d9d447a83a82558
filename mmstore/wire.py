"""The JSON form of the values records and queries carry, one codec for both ends: the
client encodes (:func:`encode`), the service decodes (:func:`decode`), so that a value
reaches the store as the same Python object the embedded call would have been given.

- bytes: ``{"$base64": "..."}``
- a numpy array: ``{"$array": "<base64 of its little-endian bytes>", "dtype", "shape"}``,
  not a JSON list of floats (a third of the size, and bit for bit the same floats)
- a tuple, such as audio's ``(samples, sample_rate)``: ``{"$tuple": [...]}``
- a PIL image: its lossless PNG bytes; a path: its string; a datetime: ISO 8601
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from mmstore.errors import InvalidInputError

#: the dtypes an ``$array`` may have (numbers and booleans: never Python objects)
ARRAY_DTYPES = frozenset(
    [
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
    ]
)
MAX_NDIM = 4


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data in the wire form above."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__.startswith("PIL."):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return encode(buffer.getvalue())
    return value


def _encode_array(array: np.ndarray) -> Any:
    if array.dtype.name not in ARRAY_DTYPES or array.ndim > MAX_NDIM:
        return encode(array.tolist())
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    data = base64.b64encode(little.tobytes()).decode("ascii")
    return {"$array": data, "dtype": array.dtype.name, "shape": list(array.shape)}


def decode(value: Any) -> Any:
    """The Python value of wire data: ``$base64`` to bytes, ``$array`` to a numpy array,
    ``$tuple`` to a tuple, anywhere in a JSON value; the rest as given. A malformed form
    is an :class:`InvalidInputError` that says what is wrong with it."""
    if isinstance(value, dict):
        if "$base64" in value:
            return _bytes(value)
        if "$array" in value:
            return array(value)
        if "$tuple" in value:
            return _tuple(value)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _bytes(value: dict[str, Any]) -> bytes:
    if set(value) != {"$base64"}:
        raise InvalidInputError(f"a $base64 value has no other keys, got {sorted(value)}")
    try:
        return base64.b64decode(value["$base64"], validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise InvalidInputError(f"invalid $base64 value: {e}") from None


def _tuple(value: dict[str, Any]) -> tuple[Any, ...]:
    items = value["$tuple"]
    if set(value) != {"$tuple"} or not isinstance(items, list):
        raise InvalidInputError('a $tuple value is {"$tuple": [items]} and nothing else')
    return tuple(decode(v) for v in items)


def array(value: Mapping[str, Any]) -> np.ndarray:
    """The numpy array of an ``$array`` form (also used for a search's ``vector``)."""
    if set(value) != {"$array", "dtype", "shape"}:
        raise InvalidInputError(
            f'an $array value has the keys "$array", "dtype" and "shape", got {sorted(value)}'
        )
    dtype, shape = value["dtype"], value["shape"]
    if dtype not in ARRAY_DTYPES:
        raise InvalidInputError(
            f"an $array's dtype is one of {sorted(ARRAY_DTYPES)}, got {dtype!r}"
        )
    if not _is_shape(shape):
        raise InvalidInputError(
            f"an $array's shape is a list of at most {MAX_NDIM} sizes >= 0, got {shape!r}"
        )
    data = _bytes({"$base64": value["$array"]})
    kind = np.dtype(dtype).newbyteorder("<")
    want = int(np.prod(shape, dtype=np.int64)) * kind.itemsize
    if len(data) != want:
        raise InvalidInputError(
            f"an $array of shape {shape} and dtype {dtype} holds {want} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=kind).reshape(shape).astype(dtype)


def _is_shape(shape: Any) -> bool:
    return (
        isinstance(shape, list)
        and len(shape) <= MAX_NDIM
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    )
