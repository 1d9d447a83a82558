"""The ``tabular`` encoder: standardized numeric columns, one-hot categorical columns and a
bias, with means, scales and vocabularies fitted once to the first records of a field."""

from __future__ import annotations

import math
import reprlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from mmstore.plugin import ConfigError, Encoder, EncoderError, EncoderParams

#: value of the last component of every vector, so that a row at the mean is not zero
BIAS = 1.0
#: the plugin named in errors raised from the encoder itself
PLUGIN = "tabular"
#: largest magnitude a numeric cell, and its standardized value, may have: vectors are float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


class TabularParams(EncoderParams):
    #: columns standardized with the fitted mean and scale, in vector order
    numeric: list[str] = []
    #: columns one-hot encoded over the fitted vocabulary, in vector order
    categorical: list[str] = []
    #: vocabulary size per categorical column; rarer values share the out-of-vocabulary slot
    max_categories: int = Field(32, ge=1, le=4096)


class TabularEncoder(Encoder):
    """A row to ``[numeric..., one-hot per categorical..., bias]``.

    Vector layout (``dim = 1 + len(numeric) + len(categorical) * (max_categories + 1)``,
    fixed by the parameters, never by the data):

    * one component per numeric column, in ``numeric`` order: ``(x - mean) / scale``, 0
      when the cell is missing; a ``bool`` counts as the number 0 or 1; :meth:`check`
      refuses a number beyond float32's range (``FLOAT32_MAX``), and, once fitted, one
      whose standardized value is;
    * per categorical column, in ``categorical`` order, ``max_categories + 1`` components:
      slot ``i`` is the ``i``-th vocabulary value, the last slot takes values outside the
      vocabulary; all are 0 when the cell is missing;
    * a constant ``BIAS``.

    :meth:`fit` learns from the first chunk a field encodes: per numeric column the mean
    and the (population) standard deviation as scale, 1.0 where it is 0 or the column is
    all missing; per categorical column the ``max_categories`` most frequent values,
    compared as strings (:func:`category`), ties broken by the string. A column declared
    but never present is all missing. The core keeps the state in the catalog.
    """

    name = "tabular"
    version = "1"
    modalities = ("tabular",)
    Params = TabularParams
    params: TabularParams
    fitted = True
    batch_size = 4096

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        numeric, categorical = self.params.numeric, self.params.categorical
        if not numeric and not categorical:
            raise ConfigError(
                "encoder 'tabular': declare at least one column, "
                "e.g. numeric=['price'] or categorical=['brand']"
            )
        for column in [*numeric, *categorical]:
            if not column:
                raise ConfigError("encoder 'tabular': column names are non-empty strings")
        both = sorted(set(numeric) & set(categorical))
        if both:
            raise ConfigError(
                f"encoder 'tabular': columns {both} are declared both numeric and categorical; "
                "declare each column once"
            )
        for kind, columns in (("numeric", numeric), ("categorical", categorical)):
            twice = sorted(c for c, n in Counter(columns).items() if n > 1)
            if twice:
                raise ConfigError(f"encoder 'tabular': {kind} lists {twice} more than once")
        self._numeric = {column: i for i, column in enumerate(numeric)}
        self._declared = set(numeric) | set(categorical)
        self._mean = self._scale = np.empty(0)
        self._slots: list[dict[str, int]] = []

    @property
    def dim(self) -> int:
        p = self.params
        return 1 + len(p.numeric) + len(p.categorical) * (p.max_categories + 1)

    def check(self, item: Any) -> None:
        if not isinstance(item, Mapping):
            raise ValueError(f"expected a row (a mapping), got {type(item).__name__}")
        for column, value in item.items():
            if column not in self._declared:
                raise ValueError(
                    f"column {column!r} is not declared; the encoder takes numeric="
                    f"{_names(self.params.numeric)} and categorical="
                    f"{_names(self.params.categorical)}: declare it or leave it out"
                )
            if column in self._numeric and value is not None:
                self._check_number(column, value)

    def _check_number(self, column: str, value: Any) -> None:
        """A number within float32's range, and so its standardized value once fitted (NaN
        passes, as it does in :meth:`encode`: missing)."""
        if not _is_number(value):
            raise ValueError(
                f"numeric column {column!r} holds {value!r}; give a number, a bool or "
                "None (missing), or declare the column categorical"
            )
        if abs(value) > FLOAT32_MAX:  # compared exactly: an int too large for a float too
            raise ValueError(
                f"numeric column {column!r} holds {reprlib.repr(value)}, beyond float32's range "
                f"(±{FLOAT32_MAX:.4g}) that vectors are kept in; rescale the column "
                "(other units, a logarithm) or give None (missing)"
            )
        if self.state is None:
            return
        i = self._numeric[column]
        mean, scale = float(self._mean[i]), float(self._scale[i])
        z = (float(value) - mean) / scale
        if abs(z) > FLOAT32_MAX:
            raise ValueError(
                f"numeric column {column!r} holds {value!r}, which standardizes to {z:.4g} "
                f"with the fitted mean {mean:.4g} and scale {scale:.4g}, "
                f"beyond float32's range (±{FLOAT32_MAX:.4g}); give a value nearer the "
                "data the field was fitted on, or None (missing)"
            )

    def fit(self, items: Sequence[Any], modality: str) -> dict[str, Any]:
        for item in items:
            self.check(item)
        numeric = {}
        for column in self.params.numeric:
            values = np.array([float(v) for it in items if (v := it.get(column)) is not None])
            numeric[column] = _moments(values)
        categorical = {
            column: self._vocabulary([it.get(column) for it in items])
            for column in self.params.categorical
        }
        return {"rows": len(items), "numeric": numeric, "categorical": categorical}

    def _vocabulary(self, values: list[Any]) -> list[str]:
        counts = Counter(category(v) for v in values if v is not None)
        ranked = sorted(counts, key=lambda value: (-counts[value], value))
        return ranked[: self.params.max_categories]

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            mean = scale = np.empty(0)
            slots: list[dict[str, int]] = []
        else:
            try:
                stats = [state["numeric"][c] for c in self.params.numeric]
                mean = np.array([float(s["mean"]) for s in stats])
                scale = np.array([float(s["scale"]) for s in stats])
                vocabularies = [state["categorical"][c] for c in self.params.categorical]
                slots = [{str(v): i for i, v in enumerate(vocab)} for vocab in vocabularies]
            except (KeyError, TypeError, ValueError) as e:
                raise EncoderError(
                    PLUGIN,
                    f"encoder 'tabular': the fitted state does not match the columns "
                    f"{_names([*self.params.numeric, *self.params.categorical])} ({e!r}); "
                    "re-embed the field to fit it again",
                ) from e
        self._mean, self._scale, self._slots = mean, scale, slots
        super().load_state(state)

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        if not len(items):
            return np.zeros((0, self.dim), np.float32)
        if self.state is None:
            raise EncoderError(
                PLUGIN,
                "encoder 'tabular' has no fitted statistics: ingest records into the field "
                "first (its first chunk fits them), or call fit() and load_state()",
            )
        for item in items:
            self.check(item)
        out = np.zeros((len(items), self.dim), np.float64)
        n_numeric = len(self.params.numeric)
        if n_numeric:
            out[:, :n_numeric] = self._numbers(items)
        width = self.params.max_categories + 1
        for k, (column, slots) in enumerate(zip(self.params.categorical, self._slots, strict=True)):
            base = n_numeric + k * width
            for i, item in enumerate(items):
                value = item.get(column)
                if value is not None:
                    out[i, base + slots.get(category(value), width - 1)] = 1.0
        out[:, -1] = BIAS
        return out.astype(np.float32)

    def _numbers(self, items: Sequence[Any]) -> np.ndarray:
        """Standardized numeric columns, 0 where a cell is missing."""
        raw = np.array(
            [[_float(item.get(c)) for c in self.params.numeric] for item in items], np.float64
        )
        return np.where(np.isnan(raw), 0.0, (raw - self._mean) / self._scale)


def category(value: Any) -> str:
    """A categorical cell as the string compared against the vocabulary: ``str`` as is,
    ``true``/``false`` for a ``bool``, a number in its shortest form (``3`` and ``3.0`` alike)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _moments(values: np.ndarray) -> dict[str, float]:
    """Mean and scale of a numeric column's present values (0 and 1 when there are none)."""
    if not len(values):
        return {"mean": 0.0, "scale": 1.0}
    mean, std = float(values.mean()), float(values.std())
    return {
        "mean": mean if math.isfinite(mean) else 0.0,
        "scale": std if math.isfinite(std) and std > 0 else 1.0,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)  # bool is an int: True and False count as 1 and 0


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _names(columns: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    more = f", ... ({len(columns) - limit} more)" if len(columns) > limit else ""
    return f"[{shown}{more}]"
