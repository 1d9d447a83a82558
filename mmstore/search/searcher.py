"""Search: resolve the query (values to encode, a raw vector, or a stored record), check
that query and target share a space, restrict by a filter, search the target field's index,
and fuse several queries by reciprocal rank or weighted scores."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mmstore.encoding.encode import check_vectors, checked_rows, encode_batch, load_values
from mmstore.encoding.fields import Field, RetiredEncoder, build_modality
from mmstore.errors import (
    InvalidInputError,
    NotFoundError,
    RecordError,
    SpaceMismatchError,
    UnknownNameError,
    UnusableVectorsError,
)
from mmstore.hits import Hits
from mmstore.index import exact
from mmstore.search import stored
from mmstore.search.allowed import AllowedVids
from mmstore.search.fusion import Fusion, Query, check_k, check_space, check_weights, fuse
from mmstore.search.through_head import HeadSearch

if TYPE_CHECKING:
    from mmstore.state import CollectionState

#: queries in one call of search_many
MAX_BATCH = 100_000
#: scores an exact scan of search_many computes at once (64 MB)
SCORES_PER_CALL = 1 << 24


class Searcher:
    """Runs searches for one collection."""

    def __init__(self, col: CollectionState) -> None:
        self.col = col
        self.allowed_vids = AllowedVids(col)
        self._derived: dict[tuple[str, str, str], Field] = {}
        self.through_head = HeadSearch(col, self.allowed_vids, self._encode_value)

    def search(
        self,
        *,
        target: str | None,
        k: int,
        where: Mapping[str, Any] | None,
        vector: Any,
        record: str | int | None,
        fusion: Fusion,
        weights: Mapping[str, float] | None,
        values: dict[str, Any],
        head: str | None = None,
    ) -> Hits:
        check_k(k)
        if fusion not in ("rrf", "weighted"):
            raise InvalidInputError(f"fusion must be 'rrf' or 'weighted', got {fusion!r}")
        if head is not None:
            return self.through_head(head, target, k, where, vector, record, values)
        check_weights(weights, values, vector, record)
        owned = stored.owned(self.col, str(record)) if record is not None else []
        if target is None and record is not None and not values and vector is None:
            tgt = self._record_target(str(record), owned)
        else:
            tgt = self._target(target, values, record is not None or vector is not None)
        queries = self._queries(tgt, values, vector, record, weights or {}, owned)
        for q in queries:
            self._check_space(q.field, tgt)
        allowed = self.allowed_vids(tgt, where) if where else None
        exclude = str(record) if record is not None else None
        per_query = k if len(queries) == 1 else max(k * 4, 50)
        results = [
            self._one(tgt, q, per_query + (exclude is not None), allowed, exclude) for q in queries
        ]
        if len(results) == 1:
            return results[0] if len(results[0]) <= k else Hits(results[0][:k])
        return fuse(results, queries, fusion, k)

    def search_many(
        self,
        *,
        target: str | None,
        k: int,
        where: Mapping[str, Any] | None,
        vectors: Any,
        values: dict[str, Any],
    ) -> list[Hits]:
        """Hits for each of a batch of queries: one index call for the whole batch and, for
        values, one call of the encoder."""
        check_k(k)
        if (vectors is not None) + len(values) != 1:
            raise InvalidInputError(
                "give one batch of queries: vectors= (an array of shape (queries, dim)) or "
                "the values of one field as a list (text=[...])"
            )
        tgt = self._target(target, values, vectors is not None)
        matrix = (
            self._raw_matrix(vectors, tgt)
            if vectors is not None
            else self._encode_many(tgt, values)
        )
        if not len(matrix):
            return []
        allowed = self.allowed_vids(tgt, where) if where else None
        index = self.col.indexes.get(tgt)
        step = max(1, SCORES_PER_CALL // max(index.size, 1))  # an exact scan's score matrix
        if allowed is None and exact.batched(len(matrix), index.dim):
            step = len(matrix)  # FAISS's scan or an approximate index: no score matrix
        out: list[Hits] = []
        for start in range(0, len(matrix), step):
            result = index.search(matrix[start : start + step], k, allowed)
            out += [
                self.col.cache.hits(tgt.name, tgt.modality.name, s, v, k)
                for s, v in zip(result.scores, result.vids, strict=True)
            ]
        return out

    def _raw_matrix(self, vectors: Any, tgt: Field) -> np.ndarray:
        """``vectors=`` of :meth:`search_many`, checked whole; errors name the row."""
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"vectors= is not a numeric array: {e}") from e
        dim = tgt.identity.dim
        if arr.size == 0 and arr.ndim <= 2:  # no queries (an empty list too)
            return np.empty((0, dim), np.float32)
        if arr.ndim != 2 or arr.shape[1] != dim or len(arr) > MAX_BATCH:
            raise InvalidInputError(
                f"vectors= has shape {arr.shape}; field {tgt.name!r} takes an array of shape "
                f"(queries, {dim}) with at most {MAX_BATCH:,} queries"
            )
        vectors, bad = checked_rows(tgt.encoder, tgt, arr, len(arr))
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise InvalidInputError(
                f"vectors= rows {rows} are zero or hold NaN or infinite values, which cannot "
                "be searched with"
            )
        return vectors

    def _encode_many(self, tgt: Field, values: dict[str, Any]) -> np.ndarray:
        """The one field's list of values of :meth:`search_many`, encoded in one call."""
        ((name, batch),) = values.items()
        if isinstance(batch, str | bytes) or not isinstance(batch, list | tuple):
            raise InvalidInputError(
                f"{name}= takes a list of query values, got {type(batch).__name__}"
            )
        if len(batch) > MAX_BATCH:
            raise InvalidInputError(f"{name}= has {len(batch):,} values; at most {MAX_BATCH:,}")
        f = self._query_field(name, tgt)
        self._check_space(f, tgt)
        if not batch:
            return np.empty((0, tgt.identity.dim), np.float32)
        return self._encode_values(f, name, list(batch), many=True)

    # -- resolution ---------------------------------------------------------------------
    def _target(self, target: str | None, values: dict[str, Any], raw: bool) -> Field:
        fields = self.col.active
        if target is not None:
            if target not in fields:
                raise self.col.no_field(target, fields)
            return fields[target]
        if len(fields) == 1:
            return next(iter(fields.values()))
        if len(values) == 1 and not raw:
            name = next(iter(values))
            if name in fields:
                return fields[name]
            same = [f for f in fields.values() if f.modality.name == name]
            if len(same) == 1:
                return same[0]
        raise InvalidInputError(f"say which field to search: target= one of {sorted(fields)}")

    def _check_space(self, query: Field, target: Field) -> None:
        """Query and target share a space; else the error names the retrieval heads that
        bridge them, when there are some, or the one to train."""
        try:
            check_space(query, target)
        except SpaceMismatchError as e:
            heads = self._bridges(query.name, target.name)
            if not heads:
                raise
            raise SpaceMismatchError(
                f"field {query.name!r} ({query.identity.name}) and field {target.name!r} "
                f"({target.identity.name}) are in different embedding spaces; retrieval "
                f"head{'s' if len(heads) > 1 else ''} {', '.join(map(repr, heads))} "
                f"bridge{'' if len(heads) > 1 else 's'} them: search with head={heads[0]!r}"
            ) from e

    def _bridges(self, query: str, target: str) -> list[str]:
        """The retrieval heads from field ``query`` to field ``target``."""
        if not (self.col.store.path / "heads" / self.col.name).is_dir():
            return []  # no head at all: mmstore.heads (and torch with it) stays unloaded
        from mmstore.heads.artifacts import iter_metas

        return sorted(
            m["name"]
            for m in iter_metas(self.col)
            if m.get("kind") == "retrieval"
            and (m["config"].get("query"), m["config"].get("target")) == (query, target)
        )

    def _record_target(self, rid: str, owned: list[tuple[int, str]]) -> Field:
        """The field searched by ``record=`` alone: the collection's one field, or the
        one field in which the record has a vector (``owned``: its vids and fields); else
        an error that says which."""
        fields = self.col.active
        if len(fields) == 1:
            return next(iter(fields.values()))
        has = sorted({name for _, name in owned if name in fields})
        if len(has) == 1:
            return fields[has[0]]
        stored.require(self.col, rid)
        if not has:
            raise NotFoundError(f"record {rid!r} has no stored vector to search with")
        raise InvalidInputError(
            f"record {rid!r} has vectors in fields {has}; say which to search: "
            f"target={has[0]!r} finds records like it by its {has[0]}"
        )

    def _queries(
        self,
        tgt: Field,
        values: dict[str, Any],
        vector: Any,
        record: str | int | None,
        weights: Mapping[str, float],
        owned: list[tuple[int, str]],
    ) -> list[Query]:
        given = len(values) + (vector is not None) + (record is not None)
        if given == 0:
            raise InvalidInputError(
                "give something to search with: a field value (text=...), vector= or record="
            )
        out = [
            self._encode_query(name, value, tgt, weights.get(name, 1.0))
            for name, value in values.items()
        ]
        if vector is not None:
            out.append(Query(tgt, self._raw_vector(vector, tgt), weights.get("vector", 1.0)))
        if record is not None:
            out.append(self._record_query(str(record), tgt, weights.get("record", 1.0), owned))
        return out

    def _query_field(self, name: str, tgt: Field) -> Field:
        """What encodes a query value given as ``name=``: the field of that name when it
        shares the target's space; else the target's encoder when it encodes that modality
        (text into an image field of one OpenCLIP model); else a field of that modality in
        the target's space, or another encoder of that space that encodes it; else the
        field or a field of that modality in another space (the space check then names the
        retrieval head that would bridge them). Encoders that can no longer encode (a
        retired version) come last."""
        fields = self.col.active
        space = tgt.identity.space
        same_space = sorted(
            [tgt] + [f for f in fields.values() if f is not tgt and f.identity.space == space],
            key=lambda f: isinstance(f.encoder, RetiredEncoder),
        )
        if name in fields and fields[name].identity.space == space:
            return fields[name]
        for f in same_space:
            if f.modality.name == name and not isinstance(f.encoder, RetiredEncoder):
                return f
        for f in same_space:
            if name in type(f.encoder).modalities and name in self.col.store.plugins.modalities:
                return self._as_modality(f, name)
        other = [fields[name]] if name in fields else []
        other += [f for f in fields.values() if f.modality.name == name]
        if other:
            return other[0]
        if name in self.col.missing:
            raise self.col.missing[name].error()
        modalities = sorted({f.modality.name for f in fields.values()})
        if name in self.col.store.plugins.modalities:
            raise SpaceMismatchError(
                f"no field of collection {self.col.name!r} encodes {name} into the space of "
                f"field {tgt.name!r} ({tgt.identity.name}); fields hold {modalities}. Add a "
                f"field of modality {name!r} and train a retrieval head into {tgt.name!r} "
                f"(col.train_head('{name}2{tgt.name}', kind='retrieval', query=..., "
                f"target='{tgt.name}'))"
            )
        raise UnknownNameError("query field or modality", name, [*fields, *modalities])

    def _as_modality(self, f: Field, modality: str) -> Field:
        """Field ``f``'s encoder taking values of another of its modalities."""
        key = (f.name, f.key, modality)
        cached = self._derived.get(key)
        if cached is None:
            instance = build_modality(
                modality, self.col.store.plugins, None, self.col.config.options
            )
            cached = self._derived[key] = Field(f.name, instance, f.encoder, f.identity)
        return cached

    def _encode_query(self, name: str, value: Any, tgt: Field, weight: float) -> Query:
        return self._encode_value(self._query_field(name, tgt), name, value, weight)

    def _encode_value(self, f: Field, name: str, value: Any, weight: float) -> Query:
        """``value`` (given as ``name=``) encoded by field ``f``'s serving encoder."""
        return Query(f, self._encode_values(f, name, [value], many=False)[0], weight)

    def _encode_values(self, f: Field, name: str, values: list[Any], many: bool) -> np.ndarray:
        """Query values given as ``name=`` (a list of them when ``many``), loaded, checked
        and encoded by field ``f``'s serving encoder in one call; errors name the value."""
        at = (lambda i: f"query {name}=[{i}]") if many else (lambda i: f"query {name}=")
        if f.encoder.fitted and f.encoder.state is None:
            raise InvalidInputError(
                f"query {name}=: encoder {f.identity.name!r} fits its statistics on the first "
                f"records of field {f.name!r}; ingest records before searching with a value"
            )
        hook = self.col.store.plugins.hook
        labels = [f"<query {i}>" for i in range(len(values))] if many else ["<query>"]
        items = load_values(hook, f, values, labels, name)
        for i, item in enumerate(items):
            if isinstance(item, RecordError):
                raise InvalidInputError(f"{at(i)}: {item.problem}") from item
        try:
            return encode_batch(hook, f, items)
        except UnusableVectorsError as e:
            which = f"queries {name}={e.rows[:5]}" if many else f"query {name}="
            raise InvalidInputError(
                f"{which}: encoder {f.identity.name!r} turned it into a zero or non-finite "
                "vector, which cannot be searched with"
            ) from e

    def _raw_vector(self, vector: Any, tgt: Field) -> np.ndarray:
        try:
            arr = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"vector= is not numeric: {e}") from e
        if arr.shape != (tgt.identity.dim,):
            raise InvalidInputError(
                f"vector= has shape {arr.shape}; field {tgt.name!r} "
                f"holds {tgt.identity.dim}-d vectors"
            )
        squares = float(np.add.reduce(arr * arr))  # summed as checked_rows sums, same scores
        if 0 < squares < math.inf:  # the common case, in a few microseconds
            cosine = tgt.encoder.metric == "cosine"
            return arr / math.sqrt(squares) if cosine else np.ascontiguousarray(arr)
        if not np.isfinite(arr).all():
            raise InvalidInputError("vector= holds NaN or infinite values")
        try:
            return check_vectors(tgt.encoder, tgt, arr[None, :], 1)[0]
        except Exception as e:
            raise InvalidInputError(f"vector= cannot be used: {e}") from e

    def _record_query(
        self, rid: str, tgt: Field, weight: float, owned: list[tuple[int, str]]
    ) -> Query:
        """The record's stored vector (of ``owned``, its vids and fields) in the target
        field, or in a field of its space."""
        candidates = [tgt] + [
            f
            for f in self.col.active.values()
            if f is not tgt and f.identity.space == tgt.identity.space
        ]
        for f in candidates:
            vector = stored.latest(self.col, f, owned)
            if vector is not None:
                return Query(f, vector, weight)
        stored.require(self.col, rid)
        for _, name in owned:
            if name in self.col.active and name not in {f.name for f in candidates}:
                self._check_space(self.col.active[name], tgt)
        raise NotFoundError(
            f"record {rid!r} has no vector in field {tgt.name!r} or a field of "
            "its space; search with another target"
        )

    def _one(
        self, tgt: Field, q: Query, k: int, allowed: np.ndarray | None, exclude: str | None
    ) -> Hits:
        index = self.col.indexes.get(tgt)
        result = index.search(q.vector[None, :], k, allowed)
        return self.col.cache.hits(
            tgt.name, tgt.modality.name, result.scores[0], result.vids[0], k, exclude
        )
