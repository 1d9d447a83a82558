"""The request and response bodies of the service's routes, as pydantic models (they make
the OpenAPI schema), and the error statuses the routes document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmstore import wire

#: collection and field names (as :func:`mmstore.config.check_name` checks them)
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    encoders: dict[str, Any]
    options: dict[str, Any] | None = None
    index: dict[str, Any] | None = None
    exist_ok: bool = False


class WireArray(BaseModel):
    """A numpy array in the wire form of :mod:`mmstore.wire`: its little-endian bytes in
    base64, its dtype and its shape (a vector is a third of the size of a JSON list)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    data: str = Field(alias="$array")
    dtype: str
    shape: list[int]

    def value(self) -> Any:
        return wire.array(self.model_dump(by_alias=True))


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, Any]]
    on_error: Literal["raise", "skip"] = "raise"


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str | int]


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: dict[str, Any] = Field(default_factory=dict)
    target: str | None = None
    k: int = Field(10, ge=1)
    where: dict[str, Any] | None = None
    vector: list[float] | WireArray | None = None
    record: str | int | None = None
    fusion: Literal["rrf", "weighted"] = "rrf"
    weights: dict[str, float] | None = None
    head: str | None = None


class SearchManyBody(BaseModel):
    """A batch of queries: ``vectors`` (rows of one width) or one field's list of values."""

    model_config = ConfigDict(extra="forbid")
    values: dict[str, list[Any]] = Field(default_factory=dict)
    vectors: list[list[float]] | WireArray | None = None
    target: str | None = None
    k: int = Field(10, ge=1)
    where: dict[str, Any] | None = None


class TrainBody(BaseModel):
    """``name`` and ``kind``; every other key is a training option (inputs, label, epochs)."""

    model_config = ConfigDict(extra="allow")
    name: str
    kind: str = "classifier"


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[str | int | dict[str, Any]]
    on_error: Literal["raise", "skip"] = "raise"


class IngestReportOut(BaseModel):
    run_id: int
    received: int
    written: int
    unchanged: int
    encoded: int
    rejected: list[dict[str, Any]]
    seconds: float = 0.0


class HitOut(BaseModel):
    id: str
    score: float
    field: str
    modality: str
    label: str | None = None
    ts: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    values: dict[str, Any] = Field(default_factory=dict)


class HitsOut(BaseModel):
    hits: list[HitOut]


class ManyHitsOut(BaseModel):
    results: list[HitsOut]


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "done", "failed", "interrupted"]
    collection: str | None = None
    created: str
    finished: str | None = None
    error: dict[str, Any] | None = None
    report: dict[str, Any] | None = None


#: the error statuses every route may answer, each with an error body
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d}
    for s, d in [
        (400, "invalid argument, filter or configuration"),
        (401, "no or unknown key"),
        (403, "outside the key's scopes or collections, or a read-only store"),
        (404, "unknown name or id"),
        (409, "exists already, or an encoder or head changed (re-embed or retrain)"),
        (413, "body, batch or a value over a limit"),
        (422, "malformed request, or a record rejected (named in the body)"),
        (423, "the store is locked by another writer"),
        (503, "busy (Retry-After), model weights unavailable offline, or a damaged log"),
        (507, "the disk refused a write (full, a size limit, an I/O error): nothing written"),
    ]
}
