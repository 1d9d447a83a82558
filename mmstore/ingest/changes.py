"""Which stored vectors a chunk's changed records keep, which they drop, and which fields
of which records need encoding; the same plan without the records an encoder rejected; and
the records that may not change while a field's plugin is missing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mmstore.encoding.missing import MissingField
from mmstore.errors import RecordError
from mmstore.ingest import records as rec

#: per stored record id: its content hash, and per field its (source hash, encoder key, vid)s
Stored = dict[str, tuple[str, dict[str, list[tuple[str, str, int]]]]]


def plan_vectors(
    fields: Mapping[str, Any], changed: list[rec.Prepared], existing: Stored
) -> tuple[list[tuple[str, int]], dict[str, list[int]]]:
    """Stored vectors to drop, and per field the positions of records to encode: one
    vector of a field stays when its source and encoder are unchanged; every other
    vector of the record is dropped."""
    drop: list[tuple[str, int]] = []
    todo: dict[str, list[int]] = {name: [] for name in fields}
    for i, p in enumerate(changed):
        stored = existing.get(p.id, ("", {}))[1]
        for fname, rows in stored.items():
            f = fields.get(fname)
            kept = False
            for source_hash, key, vid in rows:
                if f is None or kept or p.hashes.get(fname) != source_hash or key != f.key:
                    drop.append((fname, vid))
                else:
                    kept = True
            if not kept and fname in p.values:
                todo[fname].append(i)
        for fname in p.values:
            if fname not in stored:
                todo[fname].append(i)
    return drop, todo


def without(
    bad: np.ndarray,
    changed: list[rec.Prepared],
    todo: dict[str, list[int]],
    vectors: dict[str, np.ndarray],
) -> tuple[list[rec.Prepared], dict[str, list[int]], dict[str, np.ndarray]]:
    """The records, per-field positions and vectors with the ``bad`` records removed."""
    new_pos = np.cumsum(~bad) - 1
    kept_todo, kept_vectors = {}, {}
    for name, rows in todo.items():
        keep = [j for j, i in enumerate(rows) if not bad[i]]
        kept_todo[name] = [int(new_pos[rows[j]]) for j in keep]
        if name in vectors:
            kept_vectors[name] = vectors[name][keep]
    return [p for p, b in zip(changed, bad, strict=True) if not b], kept_todo, kept_vectors


def missing_vectors(
    rid: str, existing: Stored, missing: Mapping[str, MissingField]
) -> RecordError | None:
    """Why record ``rid`` cannot be rewritten now: it is stored with a vector of a field
    whose plugin is missing, which the rewrite would drop (None when it is not)."""
    held = [f for f in existing.get(rid, ("", {}))[1] if f in missing]
    if not held:
        return None
    return RecordError(
        rid,
        held[0],
        "the stored record has a vector of this field, which an update would drop; "
        + missing[held[0]].install,
    )
