"""Structured filters compiled to SQLAlchemy expressions with bound parameters: no string of
the user's is ever spliced into SQL.

A filter is a mapping of field to condition: ``{"label": "shoe", "meta.price": {"$lt": 50},
"$or": [{"brand": "acme"}, {"brand": "zeta"}]}``. Fields are ``id``, ``label``, ``ts`` and
metadata keys, written ``meta.price`` or just ``price`` (nested: ``meta.size.eu``).
Operators: ``$eq $ne $lt $lte $gt $gte $in $nin $exists`` and ``$and $or $not``. A missing
metadata key matches only ``$ne``, ``$nin`` and ``$exists: false``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from mmstore.errors import FilterError

KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_DEPTH = 16
MAX_IN = 10_000
COLUMNS = ("id", "label", "ts")
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "$eq": lambda c, v: c == v,
    "$lt": lambda c, v: c < v,
    "$lte": lambda c, v: c <= v,
    "$gt": lambda c, v: c > v,
    "$gte": lambda c, v: c >= v,
}
Scalar = str | int | float | bool | dt.datetime


def compile_filter(where: Mapping[str, Any] | None, table: sa.Table) -> sa.ColumnElement[bool]:
    """The SQL condition for ``where`` over the records table (``true`` when empty)."""
    if where is None:
        return sa.true()
    if not isinstance(where, Mapping):
        raise FilterError(f"a filter is a mapping of field to condition, got {where!r}")
    return _mapping(where, table, 1)


def _mapping(where: Mapping[str, Any], table: sa.Table, depth: int) -> sa.ColumnElement[bool]:
    if depth > MAX_DEPTH:
        raise FilterError(f"filter is nested deeper than {MAX_DEPTH} levels")
    parts = [_clause(key, value, table, depth) for key, value in where.items()]
    return sa.and_(sa.true(), *parts)


def _clause(key: Any, value: Any, table: sa.Table, depth: int) -> sa.ColumnElement[bool]:
    if key in ("$and", "$or"):
        if not isinstance(value, list | tuple) or not value:
            raise FilterError(f"{key} takes a non-empty list of filters, got {value!r}")
        subs = [_mapping(_need_mapping(v), table, depth + 1) for v in value]
        return sa.and_(*subs) if key == "$and" else sa.or_(*subs)
    if key == "$not":
        return sa.not_(sa.func.coalesce(_mapping(_need_mapping(value), table, depth + 1), False))
    if not isinstance(key, str):
        raise FilterError(f"filter keys are strings, got {key!r}")
    if key.startswith("$"):
        raise FilterError(f"unknown logical operator {key!r}; use $and, $or or $not")
    if key not in COLUMNS:
        _meta_parts(key)  # a bad name is refused whatever its condition (even $in: [])
    if isinstance(value, Mapping):
        if not value:
            raise FilterError(f"empty condition for {key!r}")
        return sa.and_(*[_operator(key, op, arg, table) for op, arg in value.items()])
    return _operator(key, "$eq", value, table)


def _need_mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FilterError(f"expected a filter mapping, got {value!r}")
    return value


def _operator(key: str, op: Any, arg: Any, table: sa.Table) -> sa.ColumnElement[bool]:
    if op == "$exists":
        if not isinstance(arg, bool):
            raise FilterError(f"$exists takes true or false, got {arg!r}")
        expr = _path_expr(key, table, None)
        return expr.is_not(None) if arg else expr.is_(None)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list | tuple) or len(arg) > MAX_IN:
            raise FilterError(f"{op} takes a list of at most {MAX_IN} values, got {arg!r}")
        if not arg:
            return sa.false() if op == "$in" else sa.true()
        ors = [_operator(key, "$eq", v, table) for v in arg]
        return sa.or_(*ors) if op == "$in" else sa.not_(sa.or_(*ors))
    if op == "$ne":
        return sa.not_(_operator(key, "$eq", arg, table))
    if op not in COMPARE:
        raise FilterError(
            f"unknown operator {op!r} for {key!r}; use one of "
            f"{sorted([*COMPARE, '$ne', '$in', '$nin', '$exists'])}"
        )
    _check_scalar(key, arg)
    if key in ("id", "label") and isinstance(arg, int) and not isinstance(arg, bool):
        arg = str(arg)  # ids and labels given as ints are stored as their decimal strings
    if isinstance(arg, dt.datetime) and arg.tzinfo is not None:
        arg = arg.astimezone(dt.UTC).replace(tzinfo=None)
    return sa.func.coalesce(COMPARE[op](_path_expr(key, table, arg), sa.literal(arg)), False)


def _check_scalar(key: str, arg: Any) -> None:
    if arg is None or not isinstance(arg, Scalar):
        raise FilterError(
            f"condition on {key!r} takes a string, number, bool or datetime, "
            f"got {arg!r}; use $exists to test for a missing key"
        )
    if isinstance(arg, float) and arg != arg:
        raise FilterError(f"condition on {key!r}: NaN compares to nothing")


def _meta_parts(key: str) -> list[str]:
    """The parts of a metadata key (``meta.`` optional, dots nest), each checked."""
    parts = key.removeprefix("meta.").split(".")
    if not all(KEY_RE.fullmatch(p) for p in parts):  # match would allow a final newline
        raise FilterError(
            f"invalid field {key!r}: metadata keys are 1-64 letters, digits, "
            "'_' or '-', separated by dots"
        )
    return parts


def _path_expr(key: str, table: sa.Table, arg: Any) -> sa.ColumnElement[Any]:
    """The column, or the metadata value when its JSON type matches the compared value's
    (a string "50" is not the number 50), else NULL."""
    if key in COLUMNS:
        return _column_expr(key, table, arg)
    parts = _meta_parts(key)
    path = sa.bindparam(None, "$." + ".".join(f'"{p}"' for p in parts), type_=sa.String)
    meta = table.c.meta
    if arg is None:
        return sa.func.json_extract(meta, path)
    text = sa.func.json_extract_string(meta, path)
    kind = sa.func.json_type(meta, path)
    if isinstance(arg, bool):
        return sa.case((kind == "BOOLEAN", sa.cast(text, sa.Boolean)))
    if isinstance(arg, int | float):
        return sa.case((kind.in_(["BIGINT", "UBIGINT", "DOUBLE"]), sa.cast(text, sa.Double)))
    if isinstance(arg, dt.datetime):
        raise FilterError(
            f"metadata {key!r} holds JSON, which has no datetimes; compare "
            "ts with a datetime, or store an ISO string and compare strings"
        )
    return sa.case((kind == "VARCHAR", text))


def _column_expr(key: str, table: sa.Table, arg: Any) -> sa.ColumnElement[Any]:
    column = table.c[key]
    if arg is None:
        return column
    if key == "ts":
        if not isinstance(arg, dt.datetime):
            raise FilterError(f"compare ts with a datetime, got {arg!r}")
        return column
    if not isinstance(arg, str):
        raise FilterError(f"{key} is text; compare it with a string, got {arg!r}")
    return column
