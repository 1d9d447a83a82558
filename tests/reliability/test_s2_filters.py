"""S2: structured filters over Hypothesis-generated hostile values and field names give
the same answer as the pure-Python reference evaluator of tests/test_filters.py, through
the public API (``count`` and ``search`` with ``where=``); the catalog's schema is
unchanged after every batch; DuckDB's external access is off and its configuration
locked, so that no filter, value or name can reach a file, an extension or a setting.

Field names are drawn from SQL and JSON-path fragments (quotes, ``;``, ``--``, ``.``,
``[``, ``$`` inside a name, ``%``, NUL, non-ASCII) as well as plain text; values from the
hostile list of tests/test_filters.py, text, numbers and booleans.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import mmstore
from mmstore.errors import FilterError
from mmstore.storage import schema
from mmstore.storage.migrations import schema_differences
from tests.reliability.figures import record
from tests.test_filters import reference, scalars

NAME_PARTS = ["'", '"', ";", "--", ".", "[", "]", "$", "%", "\\", "\u0000", "\n", "ü", " ", "*"]
VALID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
plain = st.from_regex(VALID, fullmatch=True).map(lambda n: n[:8])
names = st.one_of(
    plain,
    plain,  # twice: most filters use valid names and get an answer to compare
    st.sampled_from(["DROP--TABLE", "or-1-1", "_", "-", "x-y", "select"]),
    st.tuples(st.sampled_from(["a", ""]), st.sampled_from(NAME_PARTS)).map("".join),
).filter(lambda n: n not in ("id", "label"))
TOTALS = {"filters": 0, "records": 0, "refused": 0}


def leaf(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    condition = st.one_of(
        scalars,
        st.dictionaries(st.sampled_from(["$eq", "$ne", "$lt", "$gt"]), scalars, min_size=1),
        st.fixed_dictionaries({"$in": st.lists(scalars, max_size=3)}),
        st.fixed_dictionaries({"$exists": st.booleans()}),
    )
    return st.dictionaries(st.sampled_from(keys), condition, min_size=1, max_size=2)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    keys = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    valid = [k for k in keys if VALID.fullmatch(k)] or ["plain"]
    metas = draw(
        st.lists(st.dictionaries(st.sampled_from(valid), scalars, max_size=3), max_size=10)
    )
    base = leaf(keys)
    where = st.one_of(
        base,
        st.fixed_dictionaries({"$or": st.lists(base, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$not": base}),
    )
    return metas, draw(st.lists(where, min_size=1, max_size=5))


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: bounded time in CI
)
@given(case=cases())
def test_hostile_filters_agree_with_the_reference(
    store: mmstore.Store, case: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    metas, wheres = case
    col = store.create_collection("f", encoders={"text": "hash_text"}, exist_ok=True)
    col.delete([f"r{i}" for i in range(10)])
    records = [{"id": f"r{i}", "text": "t", "meta": m} for i, m in enumerate(metas)]
    if records:
        col.ingest(records)
    for where in wheres:
        if not all(VALID.fullmatch(k) for k in _keys(where)):
            with pytest.raises(FilterError):  # refused with a typed error, never answered
                col.count(where)
            TOTALS["refused"] += 1
            continue
        want = {r["id"] for r in records if reference(where, r)}
        assert col.count(where) == len(want), where
        if want:
            hits = col.search(text="t", k=10, where=where)
            assert set(hits.ids) == want, where
        TOTALS["filters"] += 1
    TOTALS["records"] += len(records)
    assert schema_differences(store.catalog.conn, schema.metadata) == []


def _keys(where: Any) -> list[str]:
    """The field names a filter uses."""
    out: list[str] = []
    for k, v in where.items():
        if k in ("$or", "$and"):
            out += [name for sub in v for name in _keys(sub)]
        elif k == "$not":
            out += _keys(v)
        else:
            out.append(k)
    return out


def test_external_access_off_and_configuration_locked(store: mmstore.Store) -> None:
    conn = store.catalog.conn
    setting = "SELECT current_setting('enable_external_access')"
    assert conn.execute(sa.text(setting)).scalar() is False
    for sql in (
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "INSTALL httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
    ):
        with pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text(sql))
        conn.rollback()


def test_zz_record_the_figure() -> None:
    assert TOTALS["filters"] > 30 and TOTALS["refused"] > 10  # the generator reached both
    record(
        "S2",
        "test_hostile_filters_agree_with_the_reference",
        f"{TOTALS['filters']} generated filters with hostile names and values over "
        f"{TOTALS['records']} records: 0 differences from the reference evaluator "
        f"({TOTALS['refused']} with invalid names refused with FilterError), schema unchanged; external access "
        "off and configuration locked (4 of 4 escapes refused)",
    )
