"""Search through a retrieval head: the query encoded by the head's query field (or the
record's stored vector of it), projected by its query tower, against the target field's
vectors projected by its target tower (:mod:`mmstore.heads.retrieval`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mmstore.encoding.fields import Field
from mmstore.errors import InvalidInputError, NotFoundError
from mmstore.hits import Hits
from mmstore.search import stored
from mmstore.search.allowed import AllowedVids
from mmstore.search.fusion import Query

if TYPE_CHECKING:
    from mmstore.heads.retrieval import Served
    from mmstore.state import CollectionState

#: encodes a query value given as ``name=`` with a field's serving encoder
Encode = Callable[[Field, str, Any, float], Query]


class HeadSearch:
    """Searches through the collection's retrieval heads, each loaded once."""

    def __init__(self, col: CollectionState, allowed: AllowedVids, encode: Encode) -> None:
        self.col, self.allowed, self.encode = col, allowed, encode
        self._heads: dict[str, Served] = {}  # by head name

    def __call__(
        self,
        head: str,
        target: str | None,
        k: int,
        where: Mapping[str, Any] | None,
        vector: Any,
        record: str | int | None,
        values: dict[str, Any],
    ) -> Hits:
        """The hits of one query through ``head``. With ``record=``, the record itself is
        not left out: its own target is a match."""
        from mmstore.heads import retrieval  # torch loads only when asked for

        served = retrieval.serve(self.col, head, self._heads)
        self._check(head, served, target, vector, record, values)
        qf = self.col.active[served.query]
        if record is not None:
            vec = self._stored_vector(str(record), qf, head)
        else:
            ((name, value),) = values.items()
            retrieval.check_query_name(served, name, self.col.active, head)
            vec = self.encode(qf, name, value, 1.0).vector
        tgt = self.col.active[served.target]
        allowed = self.allowed(tgt, where) if where else None
        result = served.index.search(served.project_query(vec), k, allowed)
        return self.col.cache.hits(
            tgt.name, tgt.modality.name, result.scores[0], result.vids[0], k, None
        )

    def _check(
        self,
        head: str,
        served: Served,
        target: str | None,
        vector: Any,
        record: str | int | None,
        values: dict[str, Any],
    ) -> None:
        names = f"query field {served.query!r} and target field {served.target!r}"
        if target is not None and target != served.target:
            if target not in self.col.active:
                raise self.col.no_field(target, self.col.active)
            raise InvalidInputError(
                f"head {head!r} has {names}; search it with target={served.target!r}, "
                f"not {target!r}"
            )
        if vector is not None:
            raise InvalidInputError(
                f"vector= is not taken with head=; head {head!r} has {names}: give "
                f"{served.query}=<value> or record=<id>"
            )
        if len(values) + (record is not None) != 1:
            raise InvalidInputError(
                f"head {head!r} has {names}: give one query, {served.query}=<value> or record=<id>"
            )

    def _stored_vector(self, rid: str, f: Field, head: str) -> np.ndarray:
        """The record's stored vector of field ``f`` (its latest live one)."""
        vector = stored.latest(self.col, f, stored.owned(self.col, rid))
        if vector is not None:
            return vector
        stored.require(self.col, rid)
        raise NotFoundError(
            f"record {rid!r} has no vector in field {f.name!r}, the query field of head "
            f"{head!r}; search with {f.name}=<value>"
        )
