"""Point-in-time alignment of two collections by an entity key and the records' ``ts``,
built on DuckDB's ``ASOF JOIN`` with Feast's semantics.

For each record of ``left`` (one output row each, ordered by left id):

- ``direction="backward"``: the ``right`` record of the same entity with the latest
  ``ts <= left.ts``; ``"forward"``: the one with the earliest ``ts >= left.ts``.
- Farther than ``tolerance`` (``lag > tolerance``; ``lag == tolerance`` matches): the match
  is empty (nulls), the left row is kept. ``tolerance=None`` has no bound.
- Ties (several right records of the entity at the same ``ts``): the smallest right id
  wins, so results are stable across runs.
- Left records with a null ``ts`` or entity keep an empty match; right records with a null
  ``ts`` or entity are never matched.

``by`` is ``"id"``, ``"label"``, or a metadata key (``"entity"``, ``"meta.entity"``,
dotted when nested) read with DuckDB's ``json_extract_string``: entities compare as the
text of their JSON value (so 7 and "7" are the same entity). ``tolerance`` is a
``datetime.timedelta`` (not negative) or a string: a non-negative number and one unit of
``us``, ``ms``, ``s``, ``m``, ``h``, ``d`` (``"200ms"``, ``"1.5s"``), to whole microseconds.

Output (Arrow): ``left_id``, ``entity``, ``left_ts``, ``right_id``, ``right_ts``, ``lag``
(a duration, never negative: how far back, or forward, the match lies; null if none).
Names are validated and every value is a bound parameter.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmstore.errors import InvalidInputError
from mmstore.storage.filters import KEY_RE

if TYPE_CHECKING:
    from mmstore.datasets.aligned import AlignedDataset
    from mmstore.state import CollectionState

Direction = Literal["backward", "forward"]
#: ASOF inequality and lag for each direction (never from user input)
_DIRECTIONS = {
    "backward": ("l.t >= r.t", "l.t - r.t"),
    "forward": ("l.t <= r.t", "r.t - l.t"),
}
_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}
_UNITS_US["d"] = 24 * _UNITS_US["h"]
_TOLERANCE_RE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h|d)$")
_NO_BOUND = 2**62

_SQL = """
WITH l AS (
    SELECT id, ts, {entity} AS entity, epoch_us(ts) AS t
    FROM mms_records WHERE collection = ?
), r AS (
    SELECT id, ts, entity, t FROM (
        SELECT id, ts, {entity} AS entity, epoch_us(ts) AS t
        FROM mms_records WHERE collection = ? AND ts IS NOT NULL
    ) WHERE entity IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY entity, t ORDER BY id) = 1
), m AS (
    SELECT l.id AS left_id, l.entity, l.ts AS left_ts, r.id AS right_id,
        r.ts AS right_ts, {lag} AS lag
    FROM l ASOF LEFT JOIN r ON l.entity = r.entity AND {on}
)
SELECT left_id, entity, left_ts,
    CASE WHEN lag <= ? THEN right_id END AS right_id,
    CASE WHEN lag <= ? THEN right_ts END AS right_ts,
    CASE WHEN lag <= ? THEN lag END AS lag
FROM m ORDER BY left_id
"""


def align(
    left: CollectionState,
    right: CollectionState,
    by: str,
    on: str = "ts",
    tolerance: str | dt.timedelta | None = None,
    direction: Direction = "backward",
) -> pa.Table:
    """Each ``left`` record with the ``right`` record of the same entity at or before
    (``"backward"``) or at or after (``"forward"``) its ``ts`` (see the module doc)."""
    left.store.check_open()
    if on != "ts":
        raise InvalidInputError(f"records align on their 'ts' timestamp, got on={on!r}")
    if direction not in _DIRECTIONS:
        raise InvalidInputError(f"direction is 'backward' or 'forward', got {direction!r}")
    bound = _NO_BOUND if tolerance is None else parse_tolerance(tolerance)
    entity, entity_params = _entity_expr(by)
    cond, lag = _DIRECTIONS[direction]
    sql = _SQL.format(entity=entity, on=cond, lag=lag)
    params = [*entity_params, left.name, *entity_params, right.name, bound, bound, bound]
    table = left.store.catalog.query_arrow(sql, params)
    lag_col = table.column("lag").cast(pa.int64()).cast(pa.duration("us"))
    return table.set_column(table.schema.get_field_index("lag"), "lag", lag_col)


def align_dataset(
    left: CollectionState,
    right: CollectionState,
    by: str,
    inputs: Mapping[str, Sequence[str]],
    on: str = "ts",
    tolerance: str | dt.timedelta | None = None,
    direction: Direction = "backward",
    label: str | None = "label",
) -> tuple[AlignedDataset, AlignedDataset]:
    """Two datasets row-aligned to the left records (sorted ids) by :func:`align`:
    ``inputs={"left": [...], "right": [...]}`` name the fields of each side. The right
    dataset's ``ids`` are the left ids its rows align to (``align`` gives the right ids);
    its masks are False where there is no match; it has no labels."""
    import torch

    from mmstore.datasets.aligned import AlignedDataset, build_dataset

    if not isinstance(inputs, Mapping) or set(inputs) != {"left", "right"}:
        raise InvalidInputError(f"inputs maps 'left' and 'right' to field names, got {inputs!r}")
    table = align(left, right, by, on, tolerance, direction)
    lds = build_dataset(left, inputs["left"], label)
    if lds.ids != table.column("left_id").to_pylist():  # pragma: no cover - a changed store
        raise InvalidInputError(f"collection {left.name!r} changed while it was being aligned")
    matched = pc.unique(table.column("right_id").drop_null())
    rds = build_dataset(right, inputs["right"], None, ids=matched.to_pylist())
    pos = pc.index_in(table.column("right_id"), value_set=pa.array(rds.ids, pa.string()))
    where = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    rows, src = torch.from_numpy(np.flatnonzero(where >= 0)), torch.from_numpy(where[where >= 0])
    tensors, masks = {}, {}
    for name, x in rds.inputs.items():
        tensors[name] = torch.zeros((len(lds), x.shape[1]), dtype=x.dtype)
        masks[name] = torch.zeros(len(lds), dtype=torch.bool)
        tensors[name][rows], masks[name][rows] = x[src], rds.masks[name][src]
    return lds, AlignedDataset(list(lds.ids), tensors, masks, None, rds.keys, rds.watermark)


def parse_tolerance(value: str | dt.timedelta) -> int:
    """A tolerance in whole microseconds; InvalidInputError for anything else."""
    if isinstance(value, dt.timedelta):
        if value < dt.timedelta(0):
            raise InvalidInputError(f"tolerance must not be negative, got {value!r}")
        return value // dt.timedelta(microseconds=1)
    match = _TOLERANCE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInputError(
            f"invalid tolerance {value!r}: a timedelta, or a non-negative number and a unit "
            f"of {', '.join(_UNITS_US)} (like '200ms' or '5s')"
        )
    try:
        micros = Decimal(match[1]) * _UNITS_US[match[2]]
    except InvalidOperation as e:  # pragma: no cover - the pattern admits only decimals
        raise InvalidInputError(f"invalid tolerance {value!r}") from e
    if micros != micros.to_integral_value():
        raise InvalidInputError(f"tolerance {value!r} is not a whole number of microseconds")
    if micros >= _NO_BOUND:
        raise InvalidInputError(f"tolerance {value!r} is too large; use tolerance=None")
    return int(micros)


def _entity_expr(by: str) -> tuple[str, list[Any]]:
    """The SQL for the entity column (a fixed column, or a JSON path bound as parameter)."""
    if by in ("id", "label"):
        return by, []
    parts = by.removeprefix("meta.").split(".") if isinstance(by, str) else [""]
    if not all(KEY_RE.match(p) for p in parts):
        raise InvalidInputError(
            f"invalid by={by!r}: 'id', 'label', or a metadata key of 1-64 letters, digits, "
            "'_' or '-' (dotted when nested)"
        )
    return "json_extract_string(meta, ?)", ["$." + ".".join(f'"{p}"' for p in parts)]
