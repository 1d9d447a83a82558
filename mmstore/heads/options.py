"""Typed, closed options of each head kind: unknown keys are refused, not ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmstore.errors import InvalidInputError


class DPOptions(BaseModel):
    """Differential privacy of a classifier head's training rows (DP-SGD through Opacus,
    :mod:`mmstore.heads.privacy`): the (epsilon, delta) budget over the planned epochs and
    the per-sample gradient clipping norm. ``delta`` must also be below 1/n, n the number
    of training rows; that is checked once n is known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(gt=0.0, allow_inf_nan=False)
    delta: float = Field(gt=0.0, lt=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0, allow_inf_nan=False)


class TrainOptions(BaseModel):
    """Options every head kind takes: the loop, the split, the device, the rows, privacy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(100, ge=1, le=100_000)
    patience: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    seed: int = 0
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    where: dict[str, Any] | None = None
    dp: DPOptions | None = None

    @model_validator(mode="after")
    def _check_split(self) -> TrainOptions:
        _check_split(self.split)
        return self


class ClassifierOptions(TrainOptions):
    """What ``col.train_head(name, kind="classifier", ...)`` takes."""

    inputs: list[str] = Field(min_length=1)
    label: str = "label"
    fusion: Literal["concat", "mean", "attention"] = "concat"
    hidden: int = Field(64, ge=2, le=8192)
    mlp_hidden: int = Field(64, ge=2, le=8192)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    modality_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ClassifierOptions:
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"inputs name a field twice: {self.inputs}")
        return self


class RetrievalOptions(TrainOptions):
    """What ``col.train_head(name, kind="retrieval", query=..., target=...)`` takes: two
    towers ``Linear(dim, hidden) GELU Linear(hidden, out_dim)`` into a joint space, trained
    with a symmetric contrastive loss whose temperature is learned (``temperature`` is its
    starting value)."""

    query: str = Field(min_length=1)
    target: str = Field(min_length=1)
    hidden: int = Field(256, ge=2, le=8192)
    out_dim: int = Field(64, ge=2, le=8192)
    temperature: float = Field(0.07, ge=0.01, le=1.0)
    batch_size: int = Field(256, ge=2)

    @model_validator(mode="after")
    def _check(self) -> RetrievalOptions:
        if self.query == self.target:
            raise ValueError(f"query and target must be two fields, both are {self.query!r}")
        return self


def _check_split(split: tuple[float, float, float]) -> None:
    if any(f <= 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(
            f"split must be three positive fractions (train, val, test) summing to 1, got {split}"
        )


def parse_options(model: type[BaseModel], kind: str, values: dict[str, Any]) -> Any:
    """Validate ``values``; a bad or unknown option raises InvalidInputError naming it."""
    try:
        return model(**values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}" for err in e.errors()
        )
        allowed = ", ".join(sorted(model.model_fields))
        raise InvalidInputError(
            f"invalid options for a {kind} head: {problems} (options: {allowed})"
        ) from None
