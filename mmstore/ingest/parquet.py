"""Parquet files as a stream of Arrow batches of bounded size, each column chunk checked
against the read limit before anything is read (a file's row group is read as a whole)."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmstore.errors import InvalidInputError

#: the largest compressed column chunk (one column of one row group) read into memory at once
MAX_CHUNK_BYTES = 1 << 30


def is_parquet(source: Any) -> bool:
    """A ``pyarrow.parquet.ParquetFile``, or a path whose name ends in ``.parquet``."""
    if isinstance(source, pq.ParquetFile):
        return True
    return isinstance(source, str | os.PathLike) and os.fspath(source).lower().endswith(".parquet")


def reader(source: str | os.PathLike[str] | pq.ParquetFile, size: int) -> pa.RecordBatchReader:
    """Batches of at most ``size`` rows; InvalidInputError for a file that cannot be read
    or holds a column chunk over :data:`MAX_CHUNK_BYTES`, before a row is read."""
    name = "the Parquet file" if isinstance(source, pq.ParquetFile) else os.fspath(source)
    try:
        parquet = source if isinstance(source, pq.ParquetFile) else pq.ParquetFile(source)
    except (OSError, pa.ArrowInvalid) as e:
        raise InvalidInputError(f"{name}: cannot read it as Parquet: {e}") from e
    check_chunks(parquet, name)
    return pa.RecordBatchReader.from_batches(
        parquet.schema_arrow, parquet.iter_batches(batch_size=size)
    )


def check_chunks(parquet: pq.ParquetFile, name: str, limit: int | None = None) -> None:
    """Refuse a file with a column chunk larger than ``limit`` (its row groups are read
    one at a time, each column chunk whole), naming the row group, the column and the fix."""
    limit = MAX_CHUNK_BYTES if limit is None else limit
    meta = parquet.metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.total_compressed_size > limit:
                raise InvalidInputError(
                    f"{name}: column {chunk.path_in_schema!r} of row group {g} "
                    f"({group.num_rows:,} rows) is {chunk.total_compressed_size:,} bytes, over "
                    f"the {limit:,} bytes read into memory at once; rewrite the file with "
                    "smaller row groups, e.g. pyarrow.parquet.write_table(table, path, "
                    "row_group_size=100_000)"
                )
