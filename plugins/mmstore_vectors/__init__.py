"""Built-in plugin: bring your own embeddings. The ``vector`` modality takes precomputed
vectors and the ``precomputed`` encoder passes them through after checking them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mmstore.plugin import Encoder, EncoderParams, Modality, RecordError, hookimpl

#: numpy kinds taken as numbers: ints, unsigned ints, floats, and objects that are numbers
#: (not bools, strings, bytes or complex numbers, which ``float32`` would coerce)
NUMERIC = "iufO"
KINDS = {"b": "bools", "U": "strings", "S": "bytes", "c": "complex numbers", "O": "bools or text"}


def _non_numbers(arr: np.ndarray) -> bool:
    """Whether an object array holds bools, strings or bytes (None passes: it becomes NaN)."""
    return any(isinstance(x, bool | str | bytes | np.bool_) for x in arr.ravel())


class Vector(Modality):
    """A one-dimensional array of finite numbers, kept as float32."""

    name = "vector"

    def validate(self, value: Any, record_id: object, field: str) -> np.ndarray:
        try:
            raw = np.asarray(value)
            if raw.dtype.kind not in NUMERIC or (raw.dtype.kind == "O" and _non_numbers(raw)):
                held = KINDS.get(raw.dtype.kind, str(raw.dtype))
                raise TypeError(f"it holds {held}, not numbers; give floats or ints")
            arr = raw.astype(np.float32)
        except (TypeError, ValueError, OverflowError) as e:
            raise RecordError(record_id, field, f"not a numeric vector: {e}") from e
        if arr.ndim != 1 or arr.size == 0:
            raise RecordError(
                record_id, field, f"expected a non-empty 1-d vector, got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise RecordError(record_id, field, "vector holds NaN or infinite values")
        return arr

    def validate_batch(self, values: list[Any], record_ids: list[str], field: str) -> list[Any]:
        """Stack equal-length vectors and check them at once; anything else, and rows
        that fail, go through :meth:`validate` one by one for a precise error."""
        try:
            arrays = [np.asarray(v) for v in values]
            if any(a.dtype.kind not in "iuf" for a in arrays):  # bools, strings, objects
                return super().validate_batch(values, record_ids, field)
            stacked = np.stack(arrays).astype(np.float32, copy=False)
        except (TypeError, ValueError, OverflowError):
            return super().validate_batch(values, record_ids, field)
        if stacked.ndim != 2 or stacked.shape[1] == 0:
            return super().validate_batch(values, record_ids, field)
        out: list[Any] = list(stacked)
        for i in np.flatnonzero(~np.isfinite(stacked).all(axis=1)):
            out[i] = RecordError(record_ids[i], field, "vector holds NaN or infinite values")
        return out

    def validate_matrix(
        self, matrix: np.ndarray, record_ids: Sequence[str], field: str
    ) -> dict[int, RecordError]:
        """A column of vectors: the rows holding NaN or infinite values (a null inside a
        vector arrives as NaN)."""
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist()
        return {
            i: RecordError(record_ids[i], field, "vector holds NaN or infinite values") for i in bad
        }

    def to_source(self, value: Any) -> None:
        return None  # the vector itself is what is stored

    def fingerprint(self, value: Any) -> bytes:
        return np.asarray(value, dtype=np.float32).tobytes()


class PrecomputedParams(EncoderParams):
    dim: int = Field(ge=1, le=65_536)
    metric: Literal["cosine", "ip"] = "cosine"
    #: name of the space the vectors live in; fields with equal spaces are comparable
    space: str = "default"


class Precomputed(Encoder):
    """Passes validated vectors through; refuses a wrong dimension."""

    name = "precomputed"
    version = "1"
    modalities = ("vector",)
    Params = PrecomputedParams
    batch_size = 65_536
    params: PrecomputedParams

    @property
    def dim(self) -> int:
        return self.params.dim

    @property
    def metric(self) -> Literal["cosine", "ip"]:
        return self.params.metric

    def check(self, item: Any) -> None:
        if len(item) != self.dim:
            raise ValueError(f"vector has dimension {len(item)}, the field expects {self.dim}")

    def check_rows(self, rows: np.ndarray) -> dict[int, str]:
        if rows.shape[1] == self.dim:
            return {}
        problem = f"vector has dimension {rows.shape[1]}, the field expects {self.dim}"
        return dict.fromkeys(range(len(rows)), problem)

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        if not len(items):
            return np.zeros((0, self.dim), np.float32)
        out = np.asarray(items, dtype=np.float32)  # one pass (np.stack converts each first)
        if out.ndim != 2:
            raise ValueError(f"vectors have shape {out.shape[1:]}, expected ({self.dim},)")
        if out.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {out.shape[1]}, expected {self.dim}")
        return out


@hookimpl
def mmstore_register_modalities() -> list[type[Modality]]:
    return [Vector]


@hookimpl
def mmstore_register_encoders() -> list[type[Encoder]]:
    return [Precomputed]
