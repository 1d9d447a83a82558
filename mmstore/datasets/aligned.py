"""Aligned datasets: a collection's stored vectors per field, row-aligned by record id,
with a mask per field where a record has no vector, read in bulk from DuckDB through
Arrow into torch tensors (no per-row Python over vectors).

Rows are the collection's records (matching ``where`` and ``ids`` when given), sorted by
id. Each input is a field name, or a modality name that exactly one field has; the
dataset's tensors are keyed by field name. Only vectors of the field's *active* encoder
identity (``col.active[field].key``, the one serving searches) are read: a space being
filled by a re-embedding is not mixed in. A record without a vector for a field is still a
row: its input row is zeros and its mask is False.

``label="label"`` reads the records' label column; any other name reads the metadata key
``meta.<name>`` (dotted for nested keys) as text, JSON null or absent giving None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
import torch

from mmstore.errors import InvalidInputError, NotFoundError, UnknownNameError
from mmstore.storage import embeddings, schema
from mmstore.storage.filters import KEY_RE, compile_filter

if TYPE_CHECKING:
    from mmstore.encoding.fields import Field
    from mmstore.state import CollectionState

_IDS_TABLE = "mms_dataset_ids"


@dataclass(frozen=True)
class AlignedDataset:
    """Stored vectors of several fields, one row per record, with per-field masks."""

    ids: list[str]  # record ids, sorted
    inputs: dict[str, torch.Tensor]  # field -> (n, dim) float32; zero rows where missing
    masks: dict[str, torch.Tensor]  # field -> (n,) bool; True where the record has a vector
    labels: list[str | None] | None  # the label column when label= was given, else None
    keys: dict[str, str]  # field -> encoder key of the vectors read (lineage)
    watermark: int  # the largest vid read (0 when none)

    def __len__(self) -> int:
        return len(self.ids)

    def label_codes(self, classes: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
        """Labels as int64 codes into ``classes`` (default: the sorted distinct labels);
        -1 where a label is None or not among the classes."""
        if self.labels is None:
            raise InvalidInputError("this dataset was built without labels (label=None)")
        values = pa.array(self.labels, pa.string())
        if classes is None:
            classes = sorted(pc.unique(values.drop_null()).to_pylist())
        codes = pc.index_in(values, value_set=pa.array(classes, pa.string()))
        filled = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False)
        return torch.from_numpy(filled.astype(np.int64)), list(classes)

    def subset(self, index: Any) -> AlignedDataset:
        """The rows at ``index``: a bool mask of length ``len(self)`` or int positions
        (kept in the order given)."""
        pos = _positions(index, len(self))
        take = torch.from_numpy(pos)
        return AlignedDataset(
            ids=[self.ids[i] for i in pos.tolist()],
            inputs={k: v[take] for k, v in self.inputs.items()},
            masks={k: v[take] for k, v in self.masks.items()},
            labels=None if self.labels is None else [self.labels[i] for i in pos.tolist()],
            keys=dict(self.keys),
            watermark=self.watermark,
        )


def _positions(index: Any, n: int) -> np.ndarray:
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    arr = np.asarray(index)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise InvalidInputError(f"a row mask has shape ({n},), got {arr.shape}")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError("subset takes a bool mask or a 1-d sequence of int positions")
    if (arr < -n).any() or (arr >= n).any():
        raise InvalidInputError(f"row positions out of range for {n} rows")
    return np.where(arr < 0, arr + n, arr).astype(np.int64)


def build_dataset(
    col: CollectionState,
    inputs: Sequence[str],
    label: str | None = "label",
    where: Any = None,
    ids: Sequence[str | int] | None = None,
) -> AlignedDataset:
    """The aligned dataset of ``col`` over the fields ``inputs`` (see the module doc)."""
    col.store.check_open()
    fields = resolve_inputs(col, inputs)
    rows = _records(col, label, where, ids)
    record_ids = rows.column("id").combine_chunks()
    tensors, masks, keys, watermark = {}, {}, {}, 0
    catalog = col.store.catalog
    with catalog.snapshot(), catalog.arrow(_IDS_TABLE, pa.table({"id": record_ids})):
        for f in fields:
            matrix, mask, top = _vectors(col, f, record_ids)
            tensors[f.name], masks[f.name] = torch.from_numpy(matrix), torch.from_numpy(mask)
            keys[f.name], watermark = f.key, max(watermark, top)
    labels = rows.column("label").to_pylist() if label is not None else None
    return AlignedDataset(record_ids.to_pylist(), tensors, masks, labels, keys, watermark)


def resolve_inputs(col: CollectionState, inputs: Sequence[str]) -> list[Field]:
    """The active fields named by ``inputs`` (field names, or a modality that exactly one
    field has)."""
    if isinstance(inputs, str) or not inputs:
        raise InvalidInputError(f"inputs is a non-empty list of field names, got {inputs!r}")
    out: list[Field] = []
    for name in inputs:
        field = _resolve(col, name)
        if field.name in (f.name for f in out):
            raise InvalidInputError(f"input field {field.name!r} is named twice")
        out.append(field)
    return out


def _resolve(col: CollectionState, name: str) -> Field:
    if name in col.active:
        return col.active[name]
    same = [f for f in col.active.values() if f.modality.name == name]
    if len(same) == 1:
        return same[0]
    modalities = {f.modality.name for f in col.active.values()}
    hint = f"modality {name!r} has fields {sorted(f.name for f in same)}; name one" if same else ""
    raise UnknownNameError("input field", str(name), [*col.active, *modalities], hint)


def _records(
    col: CollectionState, label: str | None, where: Any, ids: Sequence[str | int] | None
) -> pa.Table:
    """Sorted record ids (and labels) of the rows, checking ``ids`` are all stored."""
    t = schema.records
    keep = compile_filter(where, t)
    stmt = sa.select(t.c.id, _label_expr(t, label).label("label"), keep.label("keep")).where(
        t.c.collection == col.name
    )
    rows = col.store.catalog.select_arrow(stmt)
    chosen = pc.fill_null(rows.column("keep"), False)
    if ids is not None:
        wanted = pa.array([str(i) for i in ids], pa.string())
        missing = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=rows.column("id"))))
        if len(missing):
            shown = missing.to_pylist()[:10]
            raise NotFoundError(
                f"{len(missing)} record id(s) not in collection {col.name!r}: {shown}"
            )
        chosen = pc.and_(chosen, pc.is_in(rows.column("id"), value_set=wanted))
    rows = rows.filter(chosen)
    return rows.take(pc.sort_indices(rows, [("id", "ascending")]))


def _label_expr(t: sa.Table, label: str | None) -> sa.ColumnElement[Any]:
    if label is None:
        return sa.null()
    if label == "label":
        return t.c.label
    parts = label.removeprefix("meta.").split(".") if isinstance(label, str) else [""]
    if not all(KEY_RE.match(p) for p in parts):
        raise InvalidInputError(
            f"invalid label {label!r}: 'label', or a metadata key of 1-64 letters, digits, "
            "'_' or '-' (dotted when nested)"
        )
    path = sa.bindparam(None, "$." + ".".join(f'"{p}"' for p in parts), type_=sa.String)
    return sa.func.json_extract_string(t.c.meta, path)


def _vectors(
    col: CollectionState, field: Field, record_ids: pa.Array
) -> tuple[np.ndarray, np.ndarray, int]:
    """The field's active-space vectors placed at the rows of ``record_ids``; the mask of
    rows that have one; the largest vid read."""
    dim = field.identity.dim
    catalog = col.store.catalog
    table, vectors = embeddings.vectors_of_records(
        catalog, col.name, field.name, field.key, dim, _IDS_TABLE
    )
    matrix = np.zeros((len(record_ids), dim), np.float32)
    mask = np.zeros(len(record_ids), bool)
    if table.num_rows == 0:
        return matrix, mask, 0
    pos = pc.index_in(table.column("record_id"), value_set=record_ids).to_numpy(
        zero_copy_only=False
    )
    pos = pos.astype(np.int64)  # every record_id is among the rows (the semi-join above)
    matrix[pos] = vectors  # later vids win on repeats
    mask[pos] = True
    return matrix, mask, int(pc.max(table.column("vid")).as_py())
