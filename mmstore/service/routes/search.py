"""``/collections/{c}/search`` and ``/search_many``: every query form of the collection."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter

from mmstore.service import limits
from mmstore.service.context import SERVICE, Service, need, validation
from mmstore.service.models import (
    ERRORS,
    HitsOut,
    ManyHitsOut,
    SearchBody,
    SearchManyBody,
    WireArray,
)
from mmstore.service.wire import FastJSONRoute, JSONBody, decode_values, hit_body

router = APIRouter(
    tags=["search"], responses=ERRORS, dependencies=[need("read")], route_class=FastJSONRoute
)
#: search arguments that cannot also be field names in ``values``
RESERVED = {"target", "k", "where", "vector", "record", "fusion", "weights", "head"}


@router.post("/collections/{c}/search", response_model=HitsOut)
def search(c: str, body: SearchBody, s: Service = SERVICE) -> Any:
    """Every query form of ``Collection.search``: field or modality ``values`` (bytes as
    ``{"$base64": ...}``), a raw ``vector``, a stored ``record``; ``where`` filters."""
    s.check_k(body.k)
    clash = RESERVED & set(body.values)
    if clash:
        raise validation("values", f"{sorted(clash)} are search arguments, not fields")
    values = decode_values(body.values)
    limits.check_query(values, s.modalities(c), s.settings)
    vector = None if body.vector is None else _vector(body.vector)
    hits = s.col(c).search(  # a snapshot read: beside other reads and the write in flight
        target=body.target,
        k=body.k,
        where=decode_values(body.where),
        vector=vector,
        record=body.record,
        fusion=body.fusion,
        weights=body.weights,
        head=body.head,
        **values,
    )
    return JSONBody({"hits": [hit_body(h) for h in hits]})


@router.post("/collections/{c}/search_many", response_model=ManyHitsOut)
def search_many(c: str, body: SearchManyBody, s: Service = SERVICE) -> Any:
    """``Collection.search_many``: ``vectors`` (a list of rows) or one field's list of
    ``values``, at most ``max_batch`` queries; hits for each query, in order."""
    s.check_k(body.k)
    vectors = body.vectors.value() if isinstance(body.vectors, WireArray) else body.vectors
    s.too_many("queries", _rows(vectors) + sum(map(len, body.values.values())))
    values = decode_values(body.values)
    modalities = s.modalities(c)
    for name, batch in values.items():
        for value in batch:
            limits.check_query({name: value}, modalities, s.settings)
    batches = s.col(c).search_many(
        vectors, target=body.target, k=body.k, where=decode_values(body.where), **values
    )
    return JSONBody({"results": [{"hits": [hit_body(h) for h in hits]} for hits in batches]})


def _vector(given: list[float] | WireArray) -> np.ndarray:
    """A body's ``vector`` (a JSON list or an ``$array``) as float32."""
    with np.errstate(over="ignore"):  # past float32's range is infinite: refused as such
        return np.asarray(given.value() if isinstance(given, WireArray) else given, np.float32)


def _rows(vectors: list[list[float]] | np.ndarray | None) -> int:
    if isinstance(vectors, np.ndarray):
        return len(vectors) if vectors.ndim else 1
    return len(vectors or [])
