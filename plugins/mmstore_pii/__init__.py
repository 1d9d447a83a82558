"""Built-in plugin: redacts personal data (e-mail addresses, phone numbers, card-like
numbers) from text fields before they are stored or encoded.

Opt in per collection: ``options={"pii": {"kinds": ["email", "phone"], "fields": ["text"]}}``.
With no ``fields`` every field of the ``text`` modality is redacted.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from mmstore.plugin import CollectionContext, ConfigError, hookimpl

PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "phone": re.compile(r"(?<!\w)\+?\d[\d ()-]{7,}\d(?!\w)"),
    "card": re.compile(r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)"),
}


def _settings(collection: CollectionContext) -> tuple[list[str], list[str]] | None:
    opts = collection.options.get("pii")
    if not opts:
        return None
    unknown = set(opts) - {"kinds", "fields"}
    kinds = list(opts.get("kinds", PATTERNS))
    if unknown or not set(kinds) <= set(PATTERNS):
        raise ConfigError(
            f"collection {collection.name!r}: pii options take kinds (of "
            f"{sorted(PATTERNS)}) and fields; got {dict(opts)!r}"
        )
    fields = opts.get("fields")
    if fields is None:
        fields = [f for f, modality in collection.fields.items() if modality == "text"]
    return kinds, list(fields)


def redact(text: str, kinds: list[str]) -> str:
    """Replace every match of the chosen kinds with ``[KIND]``."""
    for kind in kinds:
        text = PATTERNS[kind].sub(f"[{kind.upper()}]", text)
    return text


@hookimpl
def mmstore_prepare_records(collection: CollectionContext, records: list[dict[str, Any]]) -> None:
    settings = _settings(collection)
    if settings is None:
        return
    kinds, fields = settings
    for record in records:
        for key, value in record.items():
            if key in fields and isinstance(value, str):
                record[key] = redact(value, kinds)


@hookimpl
def mmstore_prepare_batch(
    collection: CollectionContext, batch: pa.RecordBatch
) -> pa.RecordBatch | None:
    """The same redaction over an Arrow batch's string columns."""
    settings = _settings(collection)
    if settings is None:
        return None
    kinds, fields = settings
    columns = list(batch.columns)
    for i, name in enumerate(batch.schema.names):
        kind = batch.schema.field(i).type
        if name in fields and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            texts = columns[i].to_pylist()
            redacted = [None if t is None else redact(t, kinds) for t in texts]
            columns[i] = pa.array(redacted, columns[i].type)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
