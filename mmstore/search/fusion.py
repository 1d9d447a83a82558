"""What a search is made of: one query vector in its field's space, the checks that the
number of hits and the spaces allow it, and the fusion of several queries' hits by
reciprocal rank or weighted scores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mmstore.encoding.fields import Field
from mmstore.errors import InvalidInputError, SpaceMismatchError
from mmstore.hits import Hit, Hits

MAX_K = 10_000
RRF_K = 60
Fusion = Literal["rrf", "weighted"]


@dataclass(frozen=True)
class Query:
    """One query vector and the field whose space it lives in."""

    field: Field
    vector: np.ndarray
    weight: float = 1.0


def fuse(results: list[Hits], queries: list[Query], fusion: Fusion, k: int) -> Hits:
    """Reciprocal-rank fusion (sum of 1/(60 + rank)) or a weighted sum of scores."""
    scores: dict[str, float] = defaultdict(float)
    first: dict[str, Hit] = {}
    for hits, q in zip(results, queries, strict=True):
        for rank, hit in enumerate(hits, start=1):
            contribution = 1.0 / (RRF_K + rank) if fusion == "rrf" else hit.score
            scores[hit.id] += q.weight * contribution
            first.setdefault(hit.id, hit)
    best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    out = Hits()
    for rid in best:
        h = first[rid]
        out.append(Hit(rid, scores[rid], h.field, h.modality, h.label, h.ts, h.meta, h.values))
    return out


def check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInputError(f"k must be an int from 1 to {MAX_K}, got {k!r}")


def check_weights(
    weights: Mapping[str, float] | None, values: Mapping[str, Any], vector: Any, record: Any
) -> None:
    """Every weight names a query of the search: a value's name, ``vector`` or ``record``."""
    queries = [*values, *(["vector"] if vector is not None else [])]
    queries += ["record"] if record is not None else []
    unknown = sorted(set(weights or {}) - set(queries))
    if unknown:
        raise InvalidInputError(
            f"weights= names {unknown}, which {'is' if len(unknown) == 1 else 'are'} not a "
            f"query of this search; the queries are {queries}"
        )


def check_space(query: Field, target: Field) -> None:
    if query.identity.space != target.identity.space:
        raise SpaceMismatchError(
            f"field {query.name!r} ({query.identity.name}) and field {target.name!r} "
            f"({target.identity.name}) are in different embedding spaces; no retrieval head "
            f"bridges them yet: train one with col.train_head('{query.name}2{target.name}', "
            f"kind='retrieval', query='{query.name}', target='{target.name}') and search "
            "with head=..."
        )
