"""Test helpers: deterministic fake encoders for fast tests, and the conformance checks that
every encoder and modality (built-in or third-party) should pass.

Use in a plugin's own tests::

    from mmstore.testing import check_encoder, check_modality
    check_encoder(MyEncoder(dim=16), ["a", "b", "c"], modality="text")
    check_modality(MyModality(), good=["a", "b"], bad=["", 42])
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from mmstore.errors import ConfigError, RecordError
from mmstore.plugin.encoder import Encoder, EncoderParams
from mmstore.plugin.hookspecs import hookimpl
from mmstore.plugin.modality import Modality, ModalityOptions

TOKEN = re.compile(r"\w+")


class HashParams(EncoderParams):
    dim: int = Field(64, ge=2, le=4096)
    seed: int = 0


class HashTextEncoder(Encoder):
    """Text to a signed bag of hashed words: deterministic, instant, and texts that share
    words are close, so search results are predictable in tests."""

    name = "hash_text"
    version = "1"
    modalities = ("text",)
    Params = HashParams
    params: HashParams
    batch_size = 256

    @property
    def dim(self) -> int:
        return self.params.dim

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        out = np.zeros((len(items), self.dim), np.float32)
        for row, text in enumerate(items):
            for token in TOKEN.findall(str(text).lower()):
                h = hashlib.blake2b(f"{self.params.seed}:{token}".encode(), digest_size=8).digest()
                bucket = int.from_bytes(h[:4], "little") % self.dim
                out[row, bucket] += 1.0 if h[4] & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return out


class FakePlugin:
    """Registers the fake encoders: ``mmstore.open(path, plugins=[FakePlugin()])``."""

    @hookimpl
    def mmstore_register_encoders(self) -> list[type[Encoder]]:
        return [HashTextEncoder]


def check_encoder(
    encoder: Encoder, samples: Sequence[Any], modality: str, atol: float = 1e-4
) -> None:
    """Conformance: shape, dtype, empty batch, batch invariance, determinism and identity
    round trip. Raises AssertionError naming the first broken rule.

    A ``fitted`` encoder must have its state loaded first (``enc.load_state(enc.fit(...))``);
    the rebuilt encoder gets that state back through JSON, as the catalog gives it."""
    name = type(encoder).__name__
    assert isinstance(getattr(type(encoder), "name", None), str), f"{name} has no `name`"
    assert modality in encoder.modalities, f"{name} does not declare modality {modality!r}"
    assert encoder.metric in ("cosine", "ip"), f"{name}.metric is {encoder.metric!r}"
    dim = encoder.dim
    assert isinstance(dim, int) and dim > 0, f"{name}.dim must be a positive int, got {dim!r}"
    assert not encoder.fitted or encoder.state is not None, (
        f"{name} is fitted: call load_state(fit(samples, modality)) before checking it"
    )
    empty = encoder.encode([], modality)
    assert isinstance(empty, np.ndarray) and empty.shape == (0, dim), (
        f"{name}: an empty batch must give shape (0, {dim}), got {getattr(empty, 'shape', empty)}"
    )
    batch = encoder.encode(list(samples), modality)
    assert isinstance(batch, np.ndarray), f"{name}.encode must return a numpy array"
    assert batch.shape == (len(samples), dim), (
        f"{name}: shape {batch.shape}, expected ({len(samples)}, {dim})"
    )
    assert batch.dtype == np.float32, f"{name}: dtype {batch.dtype}, expected float32"
    assert np.isfinite(batch).all(), f"{name}: non-finite values"
    singles = np.concatenate([encoder.encode([s], modality) for s in samples])
    assert np.allclose(batch, singles, atol=atol), f"{name}: results depend on the batch"
    again = encoder.encode(list(samples), modality)
    assert np.allclose(batch, again, atol=atol), f"{name}: results are not deterministic"
    rebuilt = type(encoder)(**encoder.params.model_dump())
    if encoder.fitted:
        rebuilt.load_state(_json_state(encoder))
    assert rebuilt.space() == encoder.space(), f"{name}: identity does not round-trip"
    assert np.allclose(rebuilt.encode(list(samples), modality), batch, atol=atol), (
        f"{name}: an encoder rebuilt from its parameters gives other vectors"
    )


def _json_state(encoder: Encoder) -> dict[str, Any]:
    """The encoder's fitted state as it comes back from the catalog (through JSON)."""
    try:
        state: dict[str, Any] = json.loads(json.dumps(encoder.state, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise AssertionError(f"{type(encoder).__name__}: fitted state is not JSON: {e}") from e
    return state


def check_modality(
    modality: Modality, good: Sequence[Any], bad: Sequence[Any] = (), field: str = "f"
) -> None:
    """Conformance of a modality: its name and options, ``validate`` accepting every value
    of ``good`` and refusing every value of ``bad`` with a RecordError naming the record and
    field, ``validate_batch`` agreeing with ``validate`` position by position, stable
    fingerprints, and sources that are JSON and come back through ``from_source`` as the
    same content. Raises AssertionError naming the first broken rule."""
    name = type(modality).__name__
    assert isinstance(getattr(type(modality), "name", None), str), f"{name} has no `name`"
    assert good, "give at least one good value"
    _check_options(modality)
    ids = [f"good-{i}" for i in range(len(good))]
    valid = [_validate_good(modality, v, rid, field) for v, rid in zip(good, ids, strict=True)]
    for value, rid in zip(valid, ids, strict=True):
        _check_source(modality, value, rid)
    bad_ids = [f"bad-{i}" for i in range(len(bad))]
    for value, rid in zip(bad, bad_ids, strict=True):
        _validate_bad(modality, value, rid, field)
    batch = modality.validate_batch([*good, *bad], [*ids, *bad_ids], field)
    assert isinstance(batch, list) and len(batch) == len(good) + len(bad), (
        f"{name}.validate_batch must return a list aligned with its values"
    )
    for rid, one, got in zip(ids, valid, batch, strict=False):
        assert not isinstance(got, RecordError), f"{name}.validate_batch refused {rid}: {got}"
        assert modality.fingerprint(got) == modality.fingerprint(one), (
            f"{name}.validate_batch and validate disagree on {rid}"
        )
    for rid, got in zip(bad_ids, batch[len(good) :], strict=True):
        assert isinstance(got, RecordError) and got.record_id == rid, (
            f"{name}.validate_batch must give a RecordError for {rid}, got {got!r}"
        )


def _check_options(modality: Modality) -> None:
    """Options are a ModalityOptions model; they rebuild the modality; unknown keys fail."""
    name, cls = type(modality).__name__, type(modality)
    assert issubclass(cls.Options, ModalityOptions), f"{name}.Options is not a ModalityOptions"
    assert isinstance(modality.options, cls.Options), f"{name}.options is not its Options"
    rebuilt = cls(media=modality.media, **modality.options.model_dump(mode="json"))
    assert rebuilt.options == modality.options, f"{name}: options do not round-trip"
    try:
        cls(media=modality.media, mmstore_check_unknown_option=1)
    except ConfigError:
        return
    raise AssertionError(f"{name} accepted an unknown option; raise ConfigError instead")


def _validate_good(modality: Modality, value: Any, rid: str, field: str) -> Any:
    name = type(modality).__name__
    try:
        out = modality.validate(value, rid, field)
    except RecordError as e:
        raise AssertionError(f"{name}.validate refused good value {value!r}: {e}") from e
    fp = modality.fingerprint(out)
    assert isinstance(fp, str | bytes), f"{name}.fingerprint must give str or bytes"
    again = modality.fingerprint(modality.validate(value, rid, field))
    assert fp == again, f"{name}: the fingerprint of {value!r} is not stable"
    return out


def _validate_bad(modality: Modality, value: Any, rid: str, field: str) -> None:
    name = type(modality).__name__
    try:
        modality.validate(value, rid, field)
    except RecordError as e:
        assert (e.record_id, e.field) == (rid, field), (
            f"{name}: the RecordError for {value!r} names {e.record_id!r}, {e.field!r}, "
            f"not {rid!r}, {field!r}"
        )
        return
    except Exception as e:
        raise AssertionError(
            f"{name}.validate raised {type(e).__name__} for {value!r}; raise RecordError"
        ) from e
    raise AssertionError(f"{name}.validate accepted bad value {value!r}")


def _check_source(modality: Modality, value: Any, rid: str) -> None:
    """What the catalog stores is JSON, and ``from_source`` gives back the same content
    (``None`` means nothing is stored inline: the value lives elsewhere)."""
    name = type(modality).__name__
    source = modality.to_source(value)
    if source is None:
        return
    try:
        stored = json.loads(json.dumps(source, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise AssertionError(f"{name}.to_source of {rid} is not JSON: {e}") from e
    back = modality.from_source(stored)
    assert modality.fingerprint(back) == modality.fingerprint(value), (
        f"{name}: from_source(to_source(value)) of {rid} is other content"
    )


def stored_vectors(col: Any) -> list[dict[str, Any]]:
    """Every vector row a collection has stored (vid, record_id, field, encoder_key,
    source_hash, and its float32 ``vector`` as an array), in vid order, read through the
    store's own layout (segment files or, encrypted, blobs): for checks in tests."""
    from mmstore.storage import embeddings

    rows = embeddings.stored(col.store.catalog, col.name).to_pylist()
    for r in rows:
        r["vector"] = np.asarray(r["vector"], np.float32)
    return rows
