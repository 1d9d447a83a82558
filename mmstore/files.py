"""Record files for the command line: JSON Lines, CSV and Parquet, read lazily (Parquet and
CSV in Arrow batches), with a bad JSON line named by its number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmstore.errors import InvalidInputError

BATCH_ROWS = 4096


def read_records(path: Path, bad_lines: list[str] | None = None) -> Any:
    """Records from ``path`` by its suffix. With ``bad_lines`` given, JSON lines that do not
    parse are listed there and skipped; without it the first one raises."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _json_lines(path, bad_lines)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=BATCH_ROWS)
        return pa.RecordBatchReader.from_batches(parquet.schema_arrow, batches)
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        ids = pcsv.ConvertOptions(column_types={"id": pa.string()})  # "007" stays "007"
        csv = pcsv.open_csv(path, convert_options=ids)
        return pa.RecordBatchReader.from_batches(csv.schema, csv)
    raise InvalidInputError(f"{path}: unknown file type {suffix!r}; use .jsonl, .csv or .parquet")


def _json_lines(path: Path, bad_lines: list[str] | None) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"{path.name}:{number}: not valid JSON ({e.msg} at column {e.colno})"
                if bad_lines is None:
                    raise InvalidInputError(problem + "; fix the line or use --skip-bad") from e
                bad_lines.append(problem)
                continue
            yield record
