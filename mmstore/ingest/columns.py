"""The columnar write path: an Arrow batch checked column by column (ids, duplicates and
field presence with Arrow; numeric vector columns as one numpy array each) into the same
Prepared records, with the same errors and content hashes, as the record path, which
takes the batch instead where a plugin or a column needs one dict per record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmstore.encoding.encode import load_values
from mmstore.encoding.fields import Field
from mmstore.errors import PluginError, RecordError
from mmstore.ingest import records as rec
from mmstore.ingest.sources import column_values

if TYPE_CHECKING:
    from mmstore.state import CollectionState

Reject = Callable[[RecordError], None]
#: the core's own plugin name: its load-payloads fallback leaves values as they are given
CORE = "mmstore.defaults"


@dataclass
class BatchPrep:
    """Prepares one Arrow batch of an ingest call, or says it cannot (``None``)."""

    col: CollectionState
    hook: Any
    seen: set[str]
    reject: Reject

    def prepare(self, batch: pa.RecordBatch, offset: int, skip: bool) -> list[rec.Prepared] | None:
        """The batch's valid records, each bad one passed to ``reject``; ``None`` when
        the batch must go down the record path (nothing of it is done then)."""
        if not self._columnar(batch):
            return None
        try:
            batch = self._preprocess(batch)
        except RecordError:
            if not skip:
                raise
            return None  # the record path drops only the records a plugin rejects
        rows, ids = self._screen(batch, offset)
        prepared = self._standard(batch, rows, ids)
        for f in self.col.fields.values():
            if f.name in batch.schema.names:
                self._load_field(f, batch.column(f.name), rows, ids, prepared)
        return [p for p in prepared if p is not None]

    # -- whether the batch can go as columns -------------------------------------------
    def _columnar(self, batch: pa.RecordBatch) -> bool:
        known = {*self.col.fields, *self.col.missing, *rec.STANDARD_KEYS}
        if not set(batch.schema.names) <= known or "id" not in batch.schema.names:
            return False  # the record path names the record and the unknown key
        kind = batch.schema.field("id").type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if not (text or pa.types.is_integer(kind)):
            return False
        records = _plugins(self.hook.mmstore_prepare_records)
        return records <= _plugins(self.hook.mmstore_prepare_batch)

    def _preprocess(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Each plugin's ``mmstore_prepare_batch`` in turn, as ``prepare_records`` runs."""
        for impl in reversed(self.hook.mmstore_prepare_batch.get_hookimpls()):
            out = impl.function(collection=self.col.context, batch=batch)
            if out is None:
                continue
            if not isinstance(out, pa.RecordBatch) or out.num_rows != batch.num_rows:
                raise PluginError(
                    impl.plugin_name,
                    f"mmstore_prepare_batch returned {type(out).__name__}, expected a batch "
                    f"of the same {batch.num_rows} rows or None",
                )
            batch = out
        return batch

    # -- ids, duplicates, field presence -------------------------------------------------
    def _screen(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, list[str]]:
        """The rows whose id is valid and new in this call and that have a value for some
        field, with their ids; every other row rejected as the record path rejects it."""
        column = batch.column("id")
        text = column.cast(pa.string())
        flagged = _bad_ids(text) | _none_of(batch, self.col.fields)
        missing = {
            name: _valid(batch.column(name))
            for name in self.col.missing
            if name in batch.schema.names
        }
        for mask in missing.values():
            flagged |= mask
        ids = text.to_pylist()
        rows, kept = [], []
        for i, rid in enumerate(ids):
            error = None
            if flagged[i]:
                error = self._flagged(column, i, offset + i, missing)
            elif rid in self.seen:
                error = rec.duplicate(rid)
            if error is not None:
                if rid is not None and error.field != "id":
                    self.seen.add(rid)
                self.reject(error)
                continue
            self.seen.add(rid)
            rows.append(i)
            kept.append(rid)
        return np.asarray(rows, np.int64), kept

    def _flagged(
        self, column: pa.Array, i: int, position: int, missing: Mapping[str, np.ndarray]
    ) -> RecordError:
        """The record path's error for a row the vectorized checks flagged."""
        try:
            rid = rec.record_id({"id": column[i].as_py()}, position)
        except RecordError as e:
            return e
        if rid in self.seen:
            return rec.duplicate(rid)
        for name, mask in missing.items():
            if mask[i]:
                return RecordError(rid, name, self.col.missing[name].install)
        return rec.no_fields(rid, self.col.fields)

    # -- label, timestamp, metadata ------------------------------------------------------
    def _standard(
        self, batch: pa.RecordBatch, rows: np.ndarray, ids: list[str]
    ) -> list[rec.Prepared | None]:
        ts, meta = _taken(batch, "ts", rows), _taken(batch, "meta", rows)
        labels = _labels(batch, rows)
        if ts is None and meta is None and labels is not None:  # nothing to parse per row
            return [
                rec.Prepared(rid, label, None, None) for rid, label in zip(ids, labels, strict=True)
            ]
        raw = _taken(batch, "label", rows) or [None] * len(ids)
        out: list[rec.Prepared | None] = []
        for rid, label, when, data in zip(
            ids, raw, ts or [None] * len(ids), meta or [None] * len(ids), strict=True
        ):
            try:
                out.append(
                    rec.Prepared(
                        rid,
                        rec.parse_label(rid, label),
                        rec.parse_ts(rid, when),
                        rec.parse_meta(rid, data),
                    )
                )
            except RecordError as e:
                self.reject(e)
                out.append(None)
        return out

    # -- fields ----------------------------------------------------------------------------
    def _load_field(
        self,
        f: Field,
        column: pa.Array,
        rows: np.ndarray,
        ids: list[str],
        prepared: list[rec.Prepared | None],
    ) -> None:
        """One field's values across the batch: a numeric column as one array where the
        modality takes columns, else each value through the load-payloads hook."""
        present = _valid(column)[rows] if len(rows) else np.zeros(0, bool)
        at = [j for j in np.flatnonzero(present).tolist() if prepared[j] is not None]
        if not at:
            return
        values = column.take(pa.array(rows[at]))
        results = self._values(f, values, [ids[j] for j in at])
        for j, value in zip(at, results, strict=True):
            p = prepared[j]
            assert p is not None
            if isinstance(value, RecordError):
                self.reject(value)
                prepared[j] = None
                continue
            p.values[f.name] = value
            p.hashes[f.name] = rec.field_hash(f.modality.fingerprint(value))

    def _values(self, f: Field, values: pa.Array, ids: list[str]) -> list[Any]:
        """Each value, or the RecordError that rejects its record."""
        matrix = self._matrix(f, values)
        if matrix is None:
            return load_values(self.hook, f, list(column_values(values)), ids, f.name)
        good, array = matrix
        out: list[Any] = [None] * len(ids)
        others = np.flatnonzero(~good).tolist()
        if others:  # wrong lengths: the record path's own errors, by record
            loaded = load_values(
                self.hook,
                f,
                values.take(pa.array(others)).to_pylist(),
                [ids[i] for i in others],
                f.name,
            )
            for i, value in zip(others, loaded, strict=True):
                out[i] = value
        where = np.flatnonzero(good)
        good_ids = [ids[i] for i in where.tolist()]
        errors = self._matrix_errors(f, array, good_ids)
        for k, i in enumerate(where.tolist()):
            out[i] = errors.get(k, array[k])
        return out

    def _matrix(self, f: Field, values: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
        """Which rows have the field's dimension, and those rows as one float32 array;
        ``None`` when the values go one by one."""
        probe = f.modality.validate_matrix(np.zeros((0, f.identity.dim), np.float32), [], f.name)
        if probe is None or _plugins(self.hook.mmstore_load_payloads) != {CORE}:
            return None
        kind = values.type
        if not (
            pa.types.is_list(kind)
            or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)
        ):
            return None
        inner = kind.value_type
        if not (pa.types.is_floating(inner) or pa.types.is_integer(inner)):
            return None
        if pa.types.is_fixed_size_list(kind):
            lengths = np.full(len(values), kind.list_size)
        else:
            lengths = values.value_lengths().to_numpy(zero_copy_only=False)
        good = lengths == f.identity.dim
        chosen = values if good.all() else values.filter(pa.array(good))
        flat = chosen.flatten().to_numpy(zero_copy_only=False)
        array = np.ascontiguousarray(flat.reshape(len(chosen), f.identity.dim), np.float32)
        return good, array

    def _matrix_errors(self, f: Field, array: np.ndarray, ids: list[str]) -> dict[int, RecordError]:
        errors = f.modality.validate_matrix(array, ids, f.name) or {}
        for k, problem in f.encoder.check_rows(array).items():
            errors.setdefault(k, RecordError(ids[k], f.name, problem))
        return errors


def _plugins(caller: Any) -> set[str]:
    return {impl.plugin_name for impl in caller.get_hookimpls()}


def _valid(column: pa.Array) -> np.ndarray:
    return column.is_valid().to_numpy(zero_copy_only=False)


def _bad_ids(text: pa.Array) -> np.ndarray:
    """Rows whose id is null, empty or too long."""
    lengths = pc.utf8_length(text).to_numpy(zero_copy_only=False)
    null = ~_valid(text)
    with np.errstate(invalid="ignore"):
        return (
            null
            | (np.nan_to_num(lengths, nan=1) == 0)
            | (np.nan_to_num(lengths) > rec.MAX_ID_CHARS)
        )


def _none_of(batch: pa.RecordBatch, fields: Mapping[str, Field]) -> np.ndarray:
    """Rows with no value for any field."""
    none = np.ones(batch.num_rows, bool)
    for name in fields:
        if name in batch.schema.names:
            none &= ~_valid(batch.column(name))
    return none


def _labels(batch: pa.RecordBatch, rows: np.ndarray) -> list[str | None] | None:
    """The labels as the record path parses them, where that needs no check per row
    (Arrow strings are valid UTF-8; integers are written out by Arrow as by ``str``);
    ``None`` for a column of another type."""
    if "label" not in batch.schema.names or batch.column("label").null_count == batch.num_rows:
        return [None] * len(rows)
    column = batch.column("label")
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.take(pa.array(rows)).to_pylist()
    if pa.types.is_integer(kind):
        return column.take(pa.array(rows)).cast(pa.string()).to_pylist()
    return None


def _taken(batch: pa.RecordBatch, key: str, rows: np.ndarray) -> list[Any] | None:
    if key not in batch.schema.names:
        return None
    column = batch.column(key)
    if column.null_count == len(column):
        return None
    return column.take(pa.array(rows)).to_pylist()
