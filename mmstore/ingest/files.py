"""Record files for the command line: JSON Lines, CSV and Parquet, read lazily (Parquet and
CSV in Arrow batches), with a bad JSON line named by its number, and a JSON line's record
that an ingest names by position named by its line (:class:`LineNumbers`)."""

from __future__ import annotations

import bisect
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmstore.errors import InvalidInputError
from mmstore.ingest import parquet

BATCH_ROWS = 4096
#: modalities whose values a CSV cell holds as JSON text
JSON_MODALITIES = ("vector", "tabular")


class LineNumbers:
    """Where the records of a JSON Lines file are: an ingest names a record without a
    usable id by its position ("#3"), which blank and skipped lines put off the file's
    line numbers. Only the positions where the count jumps are kept."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.jumps: list[tuple[int, int]] = [(0, 1)]  # (record position, its line)
        self.used = False  # whether records were read from a JSON Lines file

    def line(self, position: int) -> int:
        at = bisect.bisect_right(self.jumps, (position, sys.maxsize)) - 1
        first, line = self.jumps[at]
        return line + position - first

    def seen(self, position: int, line: int) -> None:
        if self.line(position) != line:
            self.jumps.append((position, line))

    def where(self, record_id: object, field: str | None) -> object:
        """A record named by position (for its id, or for not being a mapping), named by
        its file and line instead."""
        by_position = self.used and field in (None, "id")
        found = re.fullmatch(r"#(\d+)", str(record_id)) if by_position else None
        return f"{self.name}:{self.line(int(found[1]))}" if found else record_id


def read_records(
    path: Path,
    bad_lines: list[str] | None = None,
    lines: LineNumbers | None = None,
    modalities: Mapping[str, str] | None = None,
) -> Any:
    """Records from ``path`` by its suffix. With ``bad_lines`` given, JSON lines (and CSV
    cells) that do not parse are listed there and skipped; without it the first one
    raises. ``lines`` learns the line of each record of a JSON Lines file. In a CSV file,
    ``meta.<key>`` columns go into ``meta``, and a ``meta`` column and the columns of the
    fields whose modality (``modalities``: field -> modality) is ``vector`` or ``tabular``
    hold JSON (``[0.1, 0.2]``, ``{"price": 3}``)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _json_lines(path, bad_lines, lines or LineNumbers(path))
    if suffix == ".parquet":
        return parquet.reader(path, BATCH_ROWS)
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        ids = pcsv.ConvertOptions(column_types={"id": pa.string()})  # "007" stays "007"
        csv = pcsv.open_csv(path, convert_options=ids)
        shaped = CsvShape.of(csv.schema.names, modalities or {})
        if shaped.json or shaped.meta:
            return shaped.records(path.name, csv, bad_lines)
        return pa.RecordBatchReader.from_batches(csv.schema, csv)
    raise InvalidInputError(f"{path}: unknown file type {suffix!r}; use .jsonl, .csv or .parquet")


@dataclass(frozen=True)
class CsvShape:
    """Which CSV columns hold JSON text, and which are ``meta.<key>`` columns."""

    json: tuple[str, ...]
    meta: tuple[str, ...]

    @classmethod
    def of(cls, names: list[str], modalities: Mapping[str, str]) -> CsvShape:
        json_columns = [n for n in names if n == "meta" or modalities.get(n) in JSON_MODALITIES]
        return cls(tuple(json_columns), tuple(n for n in names if n.startswith("meta.")))

    def records(
        self, name: str, batches: Iterable[pa.RecordBatch], bad_lines: list[str] | None
    ) -> Iterator[dict[str, Any]]:
        row_number = 0
        for batch in batches:
            for row in batch.to_pylist():
                row_number += 1
                try:
                    yield self.record(row)
                except ValueError as e:
                    problem = f"{name} row {row_number}: {e}"
                    if bad_lines is None:
                        raise InvalidInputError(problem + "; fix the row or use --skip-bad") from e
                    bad_lines.append(problem)

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        for column in self.json:
            value = row.get(column)
            if isinstance(value, str) and value.strip():
                try:
                    row[column] = json.loads(value)
                except ValueError as e:
                    raise ValueError(f"column {column!r} holds no JSON ({_why(e)})") from e
            elif value == "":
                row[column] = None
        meta = {c.removeprefix("meta."): row.pop(c) for c in self.meta}
        meta = {k: v for k, v in meta.items() if v is not None and v != ""}
        if meta:
            base = row.get("meta") or {}
            if not isinstance(base, dict):
                raise ValueError("column 'meta' holds JSON that is not an object")
            row["meta"] = base | meta
        return row


def _json_lines(
    path: Path, bad_lines: list[str] | None, lines: LineNumbers
) -> Iterator[dict[str, Any]]:
    position, lines.used = 0, True
    with open(path, "rb") as f:
        for number, data in enumerate(f, start=1):
            if not data.strip():
                continue
            try:
                record = json.loads(data.decode("utf-8"))
            except (ValueError, RecursionError) as e:
                problem = f"{path.name}:{number}: {_why(e)}"
                if bad_lines is None:
                    raise InvalidInputError(problem + "; fix the line or use --skip-bad") from e
                bad_lines.append(problem)
                continue
            lines.seen(position, number)
            position += 1
            yield record


def _why(error: Exception) -> str:
    """Why a line is not a record: bytes that are not UTF-8, or text that is not JSON (or
    that the parser refuses: nested too deep, an integer of too many digits)."""
    if isinstance(error, UnicodeDecodeError):
        return f"not valid UTF-8 ({error.reason} at byte {error.start})"
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at column {error.colno})"
    if isinstance(error, RecursionError):
        return "not readable JSON (nested too deeply)"
    return f"not readable JSON ({error})"
