"""The one encoding step that ingest, search, predict and re-embedding share: load a
field's values (the ``mmstore_load_payloads`` hook, or a stored source), check each with
the encoder, encode in batches through the ``mmstore_encode_batch`` hook, then check the
output and normalize the vectors of cosine encoders."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmstore.encoding.fields import Field
from mmstore.errors import (
    EncoderError,
    MMStoreError,
    PluginError,
    RecordError,
    UnusableVectorsError,
)
from mmstore.plugin.encoder import Encoder


# -- loading and checking ---------------------------------------------------------------------
def load_values(hook: Any, f: Field, values: list[Any], ids: list[str], name: str) -> list[Any]:
    """Each value loaded by the field's modality (through the load-payloads hook) and
    checked by its encoder, in the order given; a value that fails is its RecordError,
    naming ``ids[i]`` and field ``name``."""
    results = hook.mmstore_load_payloads(
        modality=f.modality, values=values, record_ids=ids, field=name
    )
    if not isinstance(results, list) or len(results) != len(values):
        raise PluginError(
            "load_payloads",
            f"returned {type(results).__name__} for {len(values)} values of field {name!r}; "
            "expected a list",
        )
    return [
        r if isinstance(r, RecordError) else checked(f, rid, name, r)
        for rid, r in zip(ids, results, strict=True)
    ]


def checked(f: Field, rid: str, name: str, value: Any) -> Any:
    """``value`` if the field's encoder takes it, else a RecordError naming the record."""
    try:
        f.encoder.check(value)
    except ValueError as e:
        return RecordError(rid, name, str(e))
    return value


def stored_value(field: Field, rid: str, source: Any) -> Any:
    """The value of record ``rid``'s stored ``source`` for ``field``, checked by the
    field's encoder; RecordError naming the record when there is no source or it does not
    load or pass the check."""
    if source is None:
        raise RecordError(
            rid,
            field.name,
            f"has a vector but no stored source to re-embed (modality {field.modality.name!r} "
            "keeps only the vector); ingest the originals into a collection with the new "
            "encoder instead",
        )
    try:
        value = field.modality.from_source(source)
    except RecordError:
        raise
    except MMStoreError as e:
        raise RecordError(rid, field.name, str(e)) from e
    result = checked(field, rid, field.name, value)
    if isinstance(result, RecordError):
        raise result
    return result


# -- encoding ---------------------------------------------------------------------------------
def encode_batch(hook: Any, f: Field, batch: list[Any]) -> np.ndarray:
    """Encode through the hook, check the result, and normalize for cosine fields; a row
    that is zero (cosine) or not finite raises :class:`UnusableVectorsError`."""
    vectors, bad = encode_rows(hook, f, batch)
    if bad.any():
        raise UnusableVectorsError(f.identity.plugin, f.identity.name, np.flatnonzero(bad).tolist())
    return vectors


def encode_rows(hook: Any, f: Field, batch: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch: the checked, normalized vectors and a mask of unusable rows."""
    return checked_rows(f.encoder, f, encode_raw(hook, f, batch), len(batch))


def encode_raw(hook: Any, f: Field, batch: list[Any]) -> Any:
    """The encoder's output for a batch, unchecked; its failures as EncoderError."""
    try:
        out = hook.mmstore_encode_batch(encoder=f.encoder, items=batch, modality=f.modality.name)
    except MMStoreError:
        raise
    except Exception as e:
        raise EncoderError(
            f.identity.plugin,
            f"encoder {f.identity.name!r} failed on a batch "
            f"of {len(batch)} {f.modality.name} items: {e}",
        ) from e
    return out


def checked_rows(encoder: Encoder, f: Field, out: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch as contiguous float32, normalized for cosine, and which rows are unusable
    (non-finite, or zero under cosine; those rows are left as zeros)."""
    plugin = f.identity.plugin
    if not isinstance(out, np.ndarray) or out.shape != (n, f.identity.dim):
        shape = getattr(out, "shape", type(out).__name__)
        raise EncoderError(
            plugin,
            f"encoder {f.identity.name!r} returned {shape}, expected ({n}, {f.identity.dim})",
        )
    out = np.ascontiguousarray(out, np.float32)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        out = out.copy()
        out[bad] = 0.0
    if encoder.metric == "cosine":
        norms = _norms(out)
        bad |= (norms[:, 0] == 0) | ~np.isfinite(norms[:, 0])  # zero, or its norm overflows
        out = out / np.where(norms == 0, 1.0, norms)
    return out, bad


def _norms(rows: np.ndarray, block: int = 4096) -> np.ndarray:
    """``np.linalg.norm(rows, axis=1, keepdims=True)``, bit for bit (each row's squares are
    summed as there), a block of rows at a time: no temporary the size of the batch."""
    squares = np.empty(len(rows), rows.dtype)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        squares[start : start + block] = np.add.reduce(part * part, axis=1)
    return np.sqrt(squares)[:, None]


def check_vectors(encoder: Encoder, f: Field, out: Any, n: int) -> np.ndarray:
    """:func:`checked_rows` that raises on any unusable row."""
    vectors, bad = checked_rows(encoder, f, out, n)
    if bad.any():
        raise UnusableVectorsError(f.identity.plugin, f.identity.name, np.flatnonzero(bad).tolist())
    return vectors


def unusable_value(f: Field, rid: str) -> RecordError:
    return RecordError(
        rid,
        f.name,
        f"encoder {f.identity.name!r} turned this value into a zero or non-finite vector, "
        "which cannot be searched; check the value (silence, all-missing columns, extremes)",
    )
