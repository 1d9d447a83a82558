"""The encoder contract: a class with a name, declared modalities and dimension, that turns a
batch of decoded items into an ``(n, dim)`` float32 array. Plugins subclass :class:`Encoder`."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from mmstore.errors import ConfigError

Metric = Literal["cosine", "ip"]


class EncoderParams(BaseModel):
    """Base for an encoder's parameters: typed, and unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the stable form hashed into identities."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class EncoderIdentity:
    """What produced a vector: stored beside it, and enough to rebuild the encoder."""

    name: str
    version: str
    params: dict[str, Any]
    plugin: str
    plugin_version: str
    dim: int
    metric: str
    space: str
    key: str = field(init=False)

    def __post_init__(self) -> None:
        blob = canonical_json([self.name, self.version, self.params, self.dim, self.metric])
        object.__setattr__(self, "key", hashlib.sha256(blob.encode()).hexdigest()[:16])


class Encoder(ABC):
    """Base class of every encoder.

    ``__init__`` only validates and stores parameters; weights load lazily on the first
    :meth:`encode`. ``dim`` comes from configuration, never from a probe.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    modalities: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[EncoderParams]] = EncoderParams
    #: how many items one :meth:`encode` call takes at most (the encoder may batch inside)
    batch_size: int = 64
    #: vectors depend on statistics fitted once to the first records a field ingests
    #: (means, scales, vocabularies); the core stores them in the catalog, so that queries
    #: and later ingests use the same ones
    fitted: ClassVar[bool] = False
    #: the fitted statistics in use, or None before :meth:`fit` or :meth:`load_state`
    state: dict[str, Any] | None = None

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as e:
            raise ConfigError(f"encoder {self.name!r}: invalid parameters: {e}") from e

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of each vector."""

    @property
    def metric(self) -> Metric:
        """How vectors compare: ``cosine`` (normalized, inner product) or ``ip``."""
        return "cosine"

    def space(self) -> str:
        """Vectors of two modalities are comparable iff their encoders' spaces are equal."""
        return f"{self.name}:{self.identity_params_key()}"

    def identity_params(self) -> dict[str, Any]:
        """Parameters that define the vectors (secrets and device choices left out)."""
        return self.params.model_dump(mode="json", exclude=set(self.runtime_params()))

    def runtime_params(self) -> tuple[str, ...]:
        """Parameter names that change how, not what, is computed (device, batch size)."""
        return ("device", "batch_size")

    def identity_params_key(self) -> str:
        blob = canonical_json([self.version, self.identity_params()])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def check(self, item: Any) -> None:  # noqa: B027 - optional per-item check
        """Raise ``ValueError`` if one validated item cannot be encoded (a wrong dimension).

        Called per record before a batch is encoded, so the error names the record.
        """

    def check_rows(self, rows: np.ndarray) -> dict[int, str]:
        """The problem of each row of an ``(n, d)`` array that :meth:`check` refuses, by
        row; the columnar write path's form of it. Override to check all rows at once."""
        problems = {}
        for i, row in enumerate(rows):
            try:
                self.check(row)
            except ValueError as e:
                problems[i] = str(e)
        return problems

    def fit(self, items: Sequence[Any], modality: str) -> dict[str, Any]:
        """Fit statistics to validated items (only when ``fitted``); return them as a
        JSON-able dict. Called once per field, on the first chunk its first ingest encodes."""
        raise NotImplementedError(f"encoder {self.name!r} declares fitted but has no fit()")

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Use fitted statistics (from :meth:`fit` or the catalog); ``None`` forgets them."""
        self.state = state

    @abstractmethod
    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        """Encode decoded items of ``modality``; returns ``(len(items), dim)`` float32."""

    def close(self) -> None:  # noqa: B027 - optional hook for encoders holding resources
        """Release models or resources (called when the store closes)."""
