"""schemathesis over every operation of the service's OpenAPI schema, in process (ASGI):
with an admin key, 0 server errors and 0 violations of the schema (status codes, content
types, response bodies); without a key, 401 on every operation but /health.

The store holds a collection ``vecs`` (120 records, a trained classifier ``clf``); half the
generated cases are pointed at it (and at ``clf``), so that generated bodies reach the
store rather than stopping at a 404. Destructive operations that would remove the fixture
(dropping ``vecs``) are sent to other names."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

import mmstore
from mmstore.service import Settings
from mmstore.service.app import create_app
from mmstore.service.keys import KeyStore
from tests.reliability.figures import record
from tests.test_service import VEC, cluster_records

EXAMPLES = 40
#: "schema-valid data is accepted" is left out: the schema cannot say which encoders are
#: installed, which fields a collection has or which dimension a vector must have, so a
#: schema-valid request may still be refused with a typed 4xx naming the problem
SEMANTIC = [schemathesis.checks.positive_data_acceptance]
OPERATIONS = 16  # as test_service.test_openapi_lists_every_route lists them


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path: Path = tmp_path_factory.mktemp("schema") / "store"
    store = mmstore.open(path)
    col = store.create_collection("vecs", encoders=VEC)
    col.ingest(cluster_records())
    col.train_head("clf", inputs=["emb"], epochs=3)
    _, admin = KeyStore(store.catalog).create("fuzz", ["admin"], "*")
    app = create_app(store, Settings(auth=True, max_batch=50, max_k=50))
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [op.ok() for op in schema.get_all_operations()]
        yield {"operations": operations, "admin": admin}
    finally:
        app.state.jobs.join(timeout=60)
        store.close()


def _aim(case: Any) -> None:
    """Point about half the cases at the fixture's collection and head, deterministically
    (never a DELETE: dropping the fixture would leave every later case at a 404)."""
    params = case.path_parameters or {}
    if "c" not in params:
        return
    digest = hashlib.blake2b(repr(sorted(params.items())).encode(), digest_size=1).digest()[0]
    if digest % 2 == 0 and case.method.upper() != "DELETE":
        params["c"] = "vecs"
        if "name" in params:
            params["name"] = "clf"


def _fuzz(operation: Any, examples: int, check: Callable[[Any], None]) -> int:
    """Run ``check`` on generated cases of one operation; the number of cases run."""
    seen = 0

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        nonlocal seen
        seen += 1
        _aim(case)
        check(case)

    run()
    return seen


def test_no_server_errors_and_no_schema_violations(served: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {served['admin']}"}
    operations = served["operations"]
    assert len(operations) == OPERATIONS
    statuses: dict[str, set[int]] = {}

    def check(case: Any) -> None:
        response = case.call_and_validate(headers=headers, excluded_checks=SEMANTIC)
        statuses.setdefault(case.operation.label, set()).add(response.status_code)

    cases = sum(_fuzz(op, EXAMPLES, check) for op in operations)
    assert cases >= OPERATIONS * 5
    # the store was reached: some generated requests succeeded beyond /health
    ok = {label for label, codes in statuses.items() if any(c < 300 for c in codes)}
    assert len(ok) >= 8, statuses
    record(
        "R10",
        "tests/test_service_schema.py::test_no_server_errors_and_no_schema_violations",
        f"schemathesis over {len(operations)} operations, {cases} generated requests with an "
        f"admin key: 0 server errors, 0 schema violations; {len(ok)} operations answered 2xx",
    )


def test_without_a_key_every_operation_but_health_is_401(served: dict[str, Any]) -> None:
    def check(case: Any) -> None:
        response = case.call()
        if case.path == "/health":
            assert response.status_code == 200
            return
        assert response.status_code == 401, (case.method, case.path, response.text)
        assert response.json()["error"] == "Unauthorized"
        assert response.headers["www-authenticate"] == ["Bearer"]  # a list per header

    cases = sum(_fuzz(op, 5, check) for op in served["operations"])
    assert cases >= OPERATIONS
    record(
        "S5",
        "tests/test_service_schema.py::test_without_a_key_every_operation_but_health_is_401",
        f"{cases} generated requests without a key over {OPERATIONS} operations: 401 on "
        "every operation but /health",
    )
