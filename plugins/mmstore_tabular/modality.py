"""The ``tabular`` modality: one row of named columns, kept inline in the catalog as JSON."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from mmstore.plugin import Modality, RecordError, canonical_json

#: most columns one value may hold; a wider row is refused, not cut
MAX_COLUMNS = 1024

Scalar = bool | int | float | str | None


class Tabular(Modality):
    """A row: a non-empty mapping of column name (``str``) to a finite number, a ``str``,
    a ``bool`` or ``None`` (missing), with at most ``MAX_COLUMNS`` columns.

    Numpy scalars become Python ones; NaN, infinities and nested values (mappings, lists)
    are refused. The validated row is a plain ``dict``, stored as is.
    """

    name = "tabular"

    def validate(self, value: Any, record_id: object, field: str) -> dict[str, Scalar]:
        if not isinstance(value, Mapping):
            raise RecordError(
                record_id,
                field,
                f"expected a mapping of column name to value (a dict), got {type(value).__name__}",
            )
        if not value:
            raise RecordError(record_id, field, "the row has no columns; leave the field out")
        if len(value) > MAX_COLUMNS:
            raise RecordError(
                record_id,
                field,
                f"the row has {len(value):,} columns, more than the limit of {MAX_COLUMNS:,}; "
                "keep only the columns the encoder uses",
            )
        row: dict[str, Scalar] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise RecordError(
                    record_id,
                    field,
                    f"column names are non-empty strings, got {key!r}; convert the keys to str",
                )
            row[key] = scalar(item, record_id, field, key)
        return row

    def to_source(self, value: Any) -> dict[str, Scalar]:
        return dict(value)

    def from_source(self, source: Any) -> dict[str, Scalar]:
        return dict(source)

    def fingerprint(self, value: Any) -> str:
        return canonical_json(value)


def scalar(value: Any, record_id: object, field: str, column: str) -> Scalar:
    """One cell as a Python ``bool``, ``int``, finite ``float``, ``str`` or ``None``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Real):
        number: int | float = int(value) if isinstance(value, numbers.Integral) else float(value)
        try:
            finite = math.isfinite(float(number))
        except OverflowError:
            finite = False
        if not finite:
            raise RecordError(
                record_id,
                field,
                f"column {column!r} holds {value!r}; numbers must be finite: give None for a "
                "missing value",
            )
        return number
    raise RecordError(
        record_id,
        field,
        f"column {column!r} holds a {type(value).__name__}; a cell is a number, a str, a bool "
        "or None (missing): put nested values in columns of their own",
    )
