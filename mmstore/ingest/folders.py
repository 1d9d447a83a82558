"""A folder of media files as records, for ``mmstore ingest STORE COLLECTION FOLDER``.

Each file whose suffix a field's modality claims (:attr:`Modality.suffixes`: ``.png`` for
``image``, ``.wav`` for ``audio``) becomes one record: its id is the file's path relative
to the folder, without the suffix (``cats/tom.jpg`` -> ``cats/tom``), and its bytes the
value of that field. Files of other suffixes and hidden files are ignored (and counted).

A sidecar (``.csv``, ``.jsonl`` or ``.parquet``) adds to records by ``id``: ``label``,
``ts``, values of other fields (a caption for a text field), and any other column as
metadata. A sidecar row whose id has no file, an id given twice and two files with one
id are problems: they fail the ingest (which then writes nothing) or, with ``problems``
given (``--skip-bad``), are listed there and left out.

Files are read lazily, one record at a time, so memory stays bounded by the ingest's
chunk size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmstore.encoding.fields import Field
from mmstore.errors import ConfigError, InvalidInputError
from mmstore.ingest.files import read_records

RECORD_KEYS = ("id", "label", "ts", "meta")


@dataclass
class FolderScan:
    """What a folder holds: record id -> (field, file), and what was ignored."""

    files: dict[str, tuple[str, Path]] = field(default_factory=dict)
    ignored: int = 0


def suffix_fields(fields: Mapping[str, Field], only: str | None = None) -> dict[str, list[str]]:
    """Suffix -> the fields whose modalities claim it; ``only`` restricts to one field. A
    suffix claimed by two fields is refused when a file of the folder has it (:func:`scan`)."""
    if only is not None:
        if only not in fields:
            raise ConfigError(f"--field {only!r}: no such field; fields: {sorted(fields)}")
        fields = {only: fields[only]}
    owner: dict[str, list[str]] = {}
    for name, f in fields.items():
        for suffix in f.modality.suffixes:
            owner.setdefault(suffix, []).append(name)
    if not owner:
        raise ConfigError(
            f"no field of {sorted(fields)} takes files (their modalities claim no suffixes)"
        )
    return owner


def scan(folder: Path, owner: Mapping[str, list[str]], problems: list[str] | None) -> FolderScan:
    """Every file under ``folder`` (sorted, recursively) that a field takes."""
    out = FolderScan()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        names = owner.get(path.suffix.lower())
        if names is None:
            out.ignored += 1
            continue
        if len(names) > 1:
            raise ConfigError(
                f"{relative} ends in {path.suffix}, which fields "
                f"{' and '.join(map(repr, names))} both take; choose one with --field"
            )
        name = names[0]
        rid = relative.with_suffix("").as_posix()
        if rid in out.files:
            _problem(
                problems,
                f"{relative} and {out.files[rid][1].relative_to(folder)} have the same id "
                f"{rid!r}; rename one",
            )
            continue
        out.files[rid] = (name, path)
    return out


def sidecar_rows(
    sidecar: Path | None, fields: Mapping[str, Field], problems: list[str] | None
) -> dict[str, dict[str, Any]]:
    """The sidecar's rows by id, each shaped as a record (unknown columns into ``meta``)."""
    if sidecar is None:
        return {}
    rows: dict[str, dict[str, Any]] = {}
    modalities = {n: f.modality.name for n, f in fields.items()}
    for number, row in enumerate(_rows(read_records(sidecar, problems, None, modalities)), 1):
        rid = row.get("id")
        if rid is None or rid == "":
            _problem(problems, f"{sidecar.name}: row {number} has no id")
            continue
        rid = str(rid)
        if rid in rows:
            _problem(problems, f"{sidecar.name}: row {number} repeats id {rid!r}")
            continue
        rows[rid] = _as_record(row, fields)
    return rows


def _rows(source: Any) -> Iterator[dict[str, Any]]:
    from mmstore.ingest.sources import chunks

    for chunk in chunks(source):
        yield from chunk


def _as_record(row: dict[str, Any], fields: Mapping[str, Field]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    meta = dict(row.get("meta") or {})
    for key, value in row.items():
        if key in RECORD_KEYS or key in fields:
            if key != "meta":
                record[key] = value
        else:
            meta[key] = value
    record["id"] = str(record["id"])
    if meta:
        record["meta"] = meta
    return record


def folder_records(
    folder: Path,
    fields: Mapping[str, Field],
    *,
    only: str | None = None,
    sidecar: Path | None = None,
    problems: list[str] | None = None,
) -> tuple[FolderScan, Iterator[dict[str, Any]]]:
    """The folder's scan and its records (read lazily). Problems raise InvalidInputError
    naming them, or are appended to ``problems`` when it is given."""
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder")
    found = scan(folder, suffix_fields(fields, only), problems)
    extra = sidecar_rows(sidecar, fields, problems)
    for rid in sorted(set(extra) - set(found.files)):
        _problem(
            problems,
            f"sidecar row {rid!r} names no file in {folder} (an id is the file's path relative "
            "to the folder, without its suffix)",
        )
    return found, _records(found, extra)


def _records(found: FolderScan, extra: Mapping[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for rid, (name, path) in found.files.items():
        record = dict(extra.get(rid, {}))
        record["id"] = rid
        record[name] = path.read_bytes()
        yield record


def _problem(problems: list[str] | None, message: str) -> None:
    if problems is None:
        raise InvalidInputError(message + "; fix it or use --skip-bad")
    problems.append(message)
