"""What ``ingest`` accepts, turned into a stream of chunks of record dicts or Arrow batches:
a dict, a list of dicts, an Arrow table, batch or reader, a pandas frame, a Parquet file,
or any iterable (read lazily, so memory stays bounded by the chunk size)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from mmstore.errors import InvalidInputError
from mmstore.ingest import parquet

DEFAULT_CHUNK = 4096


def chunks(source: Any, size: int = DEFAULT_CHUNK) -> Iterator[list[dict[str, Any]]]:
    """Yield lists of at most ``size`` record dicts."""
    if isinstance(source, Mapping):
        yield [dict(source)]
    elif isinstance(source, pa.Table):
        yield from _arrow_batches(source.to_batches(max_chunksize=size))
    elif isinstance(source, pa.RecordBatch):
        yield from _arrow_batches([source])
    elif isinstance(source, pa.RecordBatchReader):
        yield from _arrow_batches(source)
    elif _is_pandas(source):
        for start in range(0, len(source), size):
            yield [
                _from_pandas_row(r) for r in source.iloc[start : start + size].to_dict("records")
            ]
    elif isinstance(source, Iterable) and not isinstance(source, str | bytes):
        iterator = iter(source)
        while batch := list(itertools.islice(iterator, size)):
            yield batch
    else:
        raise InvalidInputError(
            f"cannot ingest a {type(source).__name__}: pass a dict, a list or iterable of "
            "dicts, an Arrow table or a pandas DataFrame"
        )


def _is_pandas(source: Any) -> bool:
    return type(source).__module__.startswith("pandas") and hasattr(source, "iloc")


def _from_pandas_row(row: dict[str, Any]) -> dict[str, Any]:
    """Drop pandas' missing-value markers so that an absent value reads as absent."""
    out = {}
    for k, v in row.items():
        if v is None or (isinstance(v, float) and v != v):
            continue
        if type(v).__name__ in ("NaTType", "NAType"):
            continue
        out[k] = v
    return out


def _arrow_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[list[dict[str, Any]]]:
    for batch in batches:
        yield batch_records(batch)


def batch_records(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """A batch as record dicts, nulls left out (an absent value)."""
    columns: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        columns[name] = column_values(column)
    return [
        {k: v[i] for k, v in columns.items() if v[i] is not None} for i in range(batch.num_rows)
    ]


def batches(
    source: Any, size: int = DEFAULT_CHUNK
) -> Iterator[list[dict[str, Any]] | pa.RecordBatch]:
    """As :func:`chunks`, but Arrow sources (and pandas frames whose columns convert to
    plain Arrow types) stay Arrow batches, for the columnar write path."""
    if isinstance(source, pa.Table):
        yield from source.to_batches(max_chunksize=size)
    elif isinstance(source, pa.RecordBatch):
        yield from (source.slice(i, size) for i in range(0, source.num_rows, size))
    elif isinstance(source, pa.RecordBatchReader):
        for batch in source:
            yield from (batch.slice(i, size) for i in range(0, batch.num_rows, size))
    elif _is_pandas(source):
        for start in range(0, len(source), size):
            yield _pandas_batch(source.iloc[start : start + size])
    elif parquet.is_parquet(source):
        yield from parquet.reader(source, size)
    elif isinstance(source, str | os.PathLike):
        raise InvalidInputError(
            f"cannot ingest the path {os.fspath(source)!r}: a path must name a .parquet file; "
            "read .jsonl and .csv files with `mmstore ingest FILE`"
        )
    else:
        yield from chunks(source, size)


def _pandas_batch(frame: Any) -> list[dict[str, Any]] | pa.RecordBatch:
    """A frame as one Arrow batch where every column converts to a type whose values read
    back as the frame holds them (strings, numbers, times, numeric lists); else as dicts."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        table = None
    if table is None or not all(_plain(t) for t in table.schema.types):
        return [_from_pandas_row(r) for r in frame.to_dict("records")]
    return pa.RecordBatch.from_pydict(
        {name: table.column(name).combine_chunks() for name in table.schema.names}
    )


def _plain(kind: pa.DataType) -> bool:
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        inner = kind.value_type
        return pa.types.is_floating(inner) or pa.types.is_integer(inner)
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_timestamp(kind)
    )


def column_values(column: pa.Array) -> Any:
    """Vector columns become rows of one 2-d array (no per-float Python objects)."""
    kind = column.type
    if (
        pa.types.is_fixed_size_list(kind)
        and pa.types.is_floating(kind.value_type)
        and column.null_count == 0
    ):
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), kind.list_size).astype(np.float32, copy=False)
    return column.to_pylist()
