"""Search results: a list of :class:`Hit` that also converts to Arrow and pandas."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from typing import Any

import pyarrow as pa


@dataclass(slots=True, eq=False)
class Hit:
    """One search hit: the record's id, its score, the field matched and that field's
    modality, and the record's label, timestamp, metadata and inline values.

    Hits of a search are filled in on first use of ``label``, ``ts``, ``meta`` or
    ``values`` (from what the record held when the search ran), so that a search read for
    its ids and scores builds no dictionaries; they compare equal to plain hits."""

    id: str
    score: float
    field: str
    modality: str
    label: str | None = None
    ts: dt.datetime | None = None
    meta: dict[str, Any] = dc_field(default_factory=dict)
    #: the record's inline sources (text of text fields)
    values: dict[str, Any] = dc_field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hit):
            return NotImplemented
        return _astuple(self) == _astuple(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq


def _astuple(h: Hit) -> tuple[Any, ...]:
    return (h.id, h.score, h.field, h.modality, h.label, h.ts, h.meta, h.values)


class Hits(list[Hit]):
    """Hits, best first."""

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self]

    @property
    def scores(self) -> list[float]:
        return [h.score for h in self]

    def to_arrow(self) -> pa.Table:
        import json

        return pa.table(
            {
                "id": pa.array(self.ids, pa.string()),
                "score": pa.array(self.scores, pa.float32()),
                "field": pa.array([h.field for h in self], pa.string()),
                "modality": pa.array([h.modality for h in self], pa.string()),
                "label": pa.array([h.label for h in self], pa.string()),
                "ts": pa.array([h.ts for h in self], pa.timestamp("us")),
                "meta": pa.array([json.dumps(h.meta) for h in self], pa.string()),
                "values": pa.array([json.dumps(h.values) for h in self], pa.string()),
            }
        )

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([asdict(h) for h in self], columns=list(Hit.__dataclass_fields__))
