"""Collection configuration: validated at the edge (unknown keys refused), stored as JSON in
the catalog, and turned into frozen objects inside."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmstore.errors import ConfigError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: record keys and search arguments that a field may not be called
RESERVED = frozenset(
    {
        "id",
        "label",
        "ts",
        "meta",
        "score",
        "vector",
        "record",
        "target",
        "k",
        "where",
        "fusion",
        "head",
        "fields",
        "modality",
        "weights",
    }
)


UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: Any) -> int:
    """A size in bytes from a number or a string such as ``"2GB"`` or ``"512 MiB"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in UNITS or float(match.group(1)) <= 0:
        raise ValueError(
            f"{value!r} is not a size: give bytes as a positive number or a string such "
            "as '2GB' or '512MiB'"
        )
    return int(float(match.group(1)) * UNITS[unit])


class IndexOptions(BaseModel):
    """How a field's vectors are indexed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: below this many vectors search is exact; at or above it ``optimize`` builds HNSW
    ann_threshold: int = Field(20_000, ge=1)
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_construction: int = Field(80, ge=8, le=1024)
    #: the recall@10 that the search width is tuned to on a held-out sample
    target_recall: float = Field(0.95, gt=0.0, le=1.0)
    #: where unfiltered searches run: ``auto`` is an exact scan on the GPU when one is
    #: visible (:mod:`mmstore.index.gpu`), else the CPU index
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: the index built past ``ann_threshold``: ``auto`` chooses from the field's size, its
    #: dimension and ``memory``, on a sample, before building (:mod:`mmstore.index.choose`)
    kind: Literal["auto", "flat", "hnsw", "ivf_sq8", "ivf_rabitq"] = "auto"
    #: bytes the index may hold in memory ("2GB", "512MiB" or a number); None: half of
    #: this machine's memory
    memory: int | None = None
    #: ``auto`` builds an HNSW graph up to this many vectors (its build grows as n^2),
    #: an IVF index with compressed codes past it (a build that grows linearly)
    graph_limit: int = Field(250_000, ge=1)

    @field_validator("memory", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> int | None:
        return None if value is None else parse_bytes(value)


class FieldSpec(BaseModel):
    """One field of a collection: its modality and the encoder that embeds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: str
    modality: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: options of this field's modality, over the collection's ``options[modality]``
    modality_options: dict[str, Any] = Field(default_factory=dict)


class CollectionConfig(BaseModel):
    """What a collection is: its fields, plugin options and index options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, FieldSpec]
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    index: IndexOptions = IndexOptions()
    #: while a field is re-embedded to a new configuration: the configuration whose
    #: vectors still serve its searches (so that query values can be encoded into them)
    serving: dict[str, FieldSpec] = Field(default_factory=dict)


def parse_field_spec(name: str, spec: Mapping[str, Any] | str) -> FieldSpec:
    """``{"encoder": "x", "modality": "text", **params}`` or just an encoder name."""
    if isinstance(spec, str):
        spec = {"encoder": spec}
    if not isinstance(spec, Mapping) or "encoder" not in spec:
        raise ConfigError(
            f"field {name!r}: give an encoder, e.g. {{'encoder': 'sentence_transformers'}}"
        )
    spec = dict(spec)
    encoder = spec.pop("encoder")
    modality = spec.pop("modality", name)
    modality_options = spec.pop("modality_options", {})
    params = spec.pop("params", {}) | spec
    return FieldSpec(
        encoder=encoder, modality=modality, params=params, modality_options=modality_options
    )


def parse_collection_config(
    fields: Mapping[str, Any], options: Mapping[str, Any] | None, index: Mapping[str, Any] | None
) -> CollectionConfig:
    """Validate what a user passed to ``create_collection``."""
    if not fields:
        raise ConfigError("a collection needs at least one field, e.g. encoders={'text': ...}")
    for name in fields:
        check_name("field", name)
        if name in RESERVED:
            raise ConfigError(f"field name {name!r} is reserved; reserved: {sorted(RESERVED)}")
    try:
        return CollectionConfig(
            fields={n: parse_field_spec(n, s) for n, s in fields.items()},
            options=dict(options or {}),
            index=IndexOptions(**(index or {})),
        )
    except ValidationError as e:
        raise ConfigError(f"invalid collection configuration: {e}") from e


def check_name(kind: str, name: object) -> str:
    """Names of collections and fields: lower-case letters, digits and underscores."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):  # match allows a final \n
        raise ConfigError(
            f"invalid {kind} name {name!r}: use 1-63 lower-case letters, digits and "
            "underscores, starting with a letter"
        )
    return name


@dataclass(frozen=True)
class CollectionContext:
    """What a ``mmstore_prepare_records`` implementation sees of the collection."""

    name: str
    #: field name to modality name
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
