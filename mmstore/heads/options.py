"""Typed, closed options of each head kind: unknown keys are refused, not ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmstore.errors import InvalidInputError


class ClassifierOptions(BaseModel):
    """What ``col.train_head(name, kind="classifier", ...)`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[str] = Field(min_length=1)
    label: str = "label"
    fusion: Literal["concat", "mean", "attention"] = "concat"
    hidden: int = Field(64, ge=2, le=8192)
    mlp_hidden: int = Field(64, ge=2, le=8192)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    modality_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(100, ge=1, le=100_000)
    patience: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    seed: int = 0
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    where: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ClassifierOptions:
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"inputs name a field twice: {self.inputs}")
        if any(f <= 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(
                f"split must be three positive fractions (train, val, test) summing to 1, "
                f"got {self.split}"
            )
        return self


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
