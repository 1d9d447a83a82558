"""Structured filters against a pure-Python reference evaluator, with hostile values and
field names: the same answer, no value ever spliced into SQL, the schema unchanged."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmstore
from mmstore.storage import schema
from mmstore.storage.filters import compile_filter
from mmstore.storage.migrations import schema_differences

HOSTILE = [
    "'; DROP TABLE mms_records; --",
    '" OR 1=1 --',
    "$.x",
    "\\",
    "%",
    "_",
    "",
    "null",
    "' OR ''='",
    "\u0000x",
    "ü",
    "😀",
]
KEYS = ["a", "b", "c", "x-y", "under_score"]
scalars = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=8),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.booleans(),
)
meta_values = st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4)


def reference(where: dict[str, Any], rec: dict[str, Any]) -> bool:
    """What a filter means, in plain Python (mirrors the documented semantics)."""
    return all(_clause(k, v, rec) for k, v in where.items())


def _clause(key: str, cond: Any, rec: dict[str, Any]) -> bool:
    if key == "$and":
        return all(reference(c, rec) for c in cond)
    if key == "$or":
        return any(reference(c, rec) for c in cond)
    if key == "$not":
        return not reference(cond, rec)
    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    return all(_op(key, op, arg, rec) for op, arg in cond.items())


def _value(key: str, rec: dict[str, Any]) -> tuple[bool, Any]:
    if key in ("id", "label"):
        return rec.get(key) is not None, rec.get(key)
    meta = rec.get("meta") or {}
    name = key.removeprefix("meta.")
    return name in meta, meta.get(name)


def _same_type(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return True
    return type(a) is type(b)


def _op(key: str, op: str, arg: Any, rec: dict[str, Any]) -> bool:
    present, value = _value(key, rec)
    if op == "$exists":
        return present == arg
    if op == "$in":
        return any(_op(key, "$eq", a, rec) for a in arg)
    if op == "$nin":
        return not any(_op(key, "$eq", a, rec) for a in arg)
    if op == "$ne":
        return not _op(key, "$eq", arg, rec)
    if not present or not _same_type(value, arg):
        return False
    return {
        "$eq": value == arg,
        "$lt": value < arg,
        "$lte": value <= arg,
        "$gt": value > arg,
        "$gte": value >= arg,
    }[op]


conditions = st.one_of(
    scalars,
    st.dictionaries(
        st.sampled_from(["$eq", "$ne", "$lt", "$lte", "$gt", "$gte"]),
        scalars,
        min_size=1,
        max_size=2,
    ),
    st.fixed_dictionaries({"$in": st.lists(scalars, max_size=3)}),
    st.fixed_dictionaries({"$nin": st.lists(scalars, max_size=3)}),
    st.fixed_dictionaries({"$exists": st.booleans()}),
)
leaf = st.dictionaries(
    st.sampled_from([*KEYS, "label", "meta.a"]), conditions, min_size=1, max_size=2
)
filters = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$not": inner}),
    ),
    max_leaves=6,
)


def _fix_label(where: Any) -> Any:
    """Labels are text: keep only string conditions on them (others are refused, tested
    elsewhere)."""
    if isinstance(where, dict):
        out = {}
        for k, v in where.items():
            if k == "label":
                v = v if isinstance(v, str) else "c1"
            out[k] = _fix_label(v) if k.startswith("$") else v
        return out
    if isinstance(where, list):
        return [_fix_label(w) for w in where]
    return where


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    metas=st.lists(meta_values, min_size=1, max_size=12),
    wheres=st.lists(filters, min_size=1, max_size=8),
)
def test_filters_agree_with_the_reference_evaluator(
    store: mmstore.Store, metas: list[dict], wheres: list[dict]
) -> None:
    col = store.create_collection("f", encoders={"text": "hash_text"}, exist_ok=True)
    col.delete([f"r{i}" for i in range(20)])
    records = [
        {"id": f"r{i}", "text": "t", "label": f"c{i % 3}", "meta": m} for i, m in enumerate(metas)
    ]
    col.ingest(records)
    for where in map(_fix_label, wheres):
        want = {r["id"] for r in records if reference(where, r)}
        assert set(_matching(store, "f", where)) == want, where
    assert schema_differences(store.catalog.conn, schema.metadata) == []


def _matching(store: mmstore.Store, collection: str, where: dict) -> list[str]:
    t = schema.records
    stmt = sa.select(t.c.id).where(t.c.collection == collection, compile_filter(where, t))
    return store.catalog.select_arrow(stmt).column("id").to_pylist()


def test_values_and_names_are_bound_never_spliced() -> None:
    t = schema.records
    where = {"a": HOSTILE[0], "b": {"$in": HOSTILE[:3]}, "label": HOSTILE[1]}
    sql = str(compile_filter(where, t).compile(compile_kwargs={"render_postcompile": True}))
    for hostile in HOSTILE[:3]:
        assert hostile not in sql
    assert "DROP" not in sql and "OR 1=1" not in sql


def test_hostile_filter_leaves_the_catalog_intact(store: mmstore.Store) -> None:
    col = store.create_collection("h", encoders={"text": "hash_text"})
    col.ingest([{"id": "a", "text": "x", "meta": {"a": HOSTILE[0]}}])
    assert col.search(text="x", where={"a": HOSTILE[0]}).ids == ["a"]
    assert col.count({"a": HOSTILE[1]}) == 0
    assert len(col) == 1
