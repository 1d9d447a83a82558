"""S5: keys and tenancy of the HTTP service under 1,000 randomized probes: each probe takes
a random key (admin, write or read keys of one collection, a revoked key, a forged key,
none), a random collection-scoped operation and a random target collection, and checks
the answer against what the key may do: 401 without a valid key, 403 outside its scopes
or collections, otherwise an answer that holds only the target collection's records. A
leak is any data of a collection the key may not reach, in any answer.

Three collections hold records whose ids, labels and metadata carry their collection's
name, so a leaked record is recognized wherever it appears in a response body.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

import mmstore
from mmstore.service import Settings
from mmstore.service.app import create_app
from mmstore.service.keys import KeyStore
from tests.reliability.figures import record

COLLECTIONS = ["alpha", "beta", "gamma"]
VEC = {"emb": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
PROBES = 1000


def records(name: str) -> list[dict[str, Any]]:
    rng = random.Random(name)
    return [
        {
            "id": f"{name}-{i}",
            "label": f"{name}-label",
            "meta": {"owner": name},
            "emb": [rng.uniform(0.1, 1) for _ in range(4)],
        }
        for i in range(20)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    store = mmstore.open(tmp_path_factory.mktemp("s5") / "s")
    keys = KeyStore(store.catalog)
    tokens: dict[str, tuple[str | None, set[str], str]] = {}  # name -> token, cols, scope
    _, token = keys.create("admin", ["admin"], "*")
    tokens["admin"] = (token, set(COLLECTIONS), "admin")
    for c in COLLECTIONS:
        store.create_collection(c, encoders=VEC).ingest(records(c))
        for scope in ("read", "write"):
            _, token = keys.create(f"{c}-{scope}", [scope], [c])
            tokens[f"{c}-{scope}"] = (token, {c}, scope)
    revoked, token = keys.create("revoked", ["admin"], "*")
    keys.revoke(revoked.id)
    tokens["revoked"] = (token, set(), "none")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    tokens["forged"] = (forged, set(), "none")
    tokens["none"] = (None, set(), "none")
    app = create_app(store, Settings(auth=True))
    with TestClient(app) as client:
        yield {"client": client, "tokens": tokens}
    store.close()


def operations(c: str) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(scope needed, method, path, json body) of the collection-scoped operations."""
    return [
        ("read", "GET", f"/collections/{c}", None),
        ("read", "GET", f"/collections/{c}/records?ids={c}-1,{c}-2", None),
        ("read", "POST", f"/collections/{c}/search", {"vector": [0.5] * 4, "k": 30}),
        ("read", "POST", f"/collections/{c}/search", {"record": f"{c}-3", "k": 30}),
        ("read", "GET", f"/collections/{c}/heads", None),
        ("write", "POST", f"/collections/{c}/records", {"records": records(c)[:2]}),
        ("write", "POST", f"/collections/{c}/records/delete", {"ids": ["nope"]}),
        ("admin", "POST", "/collections", {"name": c, "encoders": VEC, "exist_ok": True}),
    ]


RANK = {"none": -1, "read": 0, "write": 1, "admin": 2}


def expected(scope: str, cols: set[str], need: str, target: str, valid: bool) -> int:
    if not valid:
        return 401
    if RANK[scope] < RANK[need] or (need != "admin" and target not in cols):
        return 403
    return 200


def leaked(body: str, allowed: set[str]) -> list[str]:
    return [c for c in COLLECTIONS if c not in allowed and f"{c}-" in body]


def test_randomized_cross_collection_probes(world: dict[str, Any]) -> None:
    client, tokens = world["client"], world["tokens"]
    rng = random.Random(5)
    counts = {401: 0, 403: 0, 200: 0}
    leaks: list[tuple[str, str, list[str]]] = []
    for _ in range(PROBES):
        name = rng.choice(sorted(tokens))
        token, cols, scope = tokens[name]
        target = rng.choice(COLLECTIONS)
        need, method, path, body = rng.choice(operations(target))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = client.request(method, path, json=body, headers=headers)
        want = expected(scope, cols, need, target, name not in ("revoked", "forged", "none"))
        got = 200 if r.status_code in (200, 201) else r.status_code
        assert got == want, (name, method, path, r.status_code, r.text[:200])
        counts[want] += 1
        allowed = set(COLLECTIONS) if scope == "admin" else ({target} & cols)
        if found := leaked(r.text, allowed if want == 200 else set()):
            leaks.append((name, path, found))
    listing = _listings(client, tokens)
    assert leaks == [] and listing == []
    assert all(counts.values())
    record(
        "S5",
        "test_randomized_cross_collection_probes",
        f"{PROBES} randomized probes over 10 credentials (admin, read and write per collection, "
        "revoked, forged, none) x 8 operations x 3 collections: "
        f"{counts[401]} x 401 (no, revoked or forged key), {counts[403]} x 403 (scope or "
        f"collection), {counts[200]} answered; 0 leaks; /collections lists only a key's own",
    )


def _listings(client: TestClient, tokens: dict[str, Any]) -> list[str]:
    """Keys whose ``GET /collections`` shows a collection they may not reach."""
    bad = []
    for name, (token, cols, _) in tokens.items():
        if token is None or name in ("revoked", "forged"):
            continue
        shown = client.get("/collections", headers={"Authorization": f"Bearer {token}"})
        if set(shown.json()["collections"]) - cols:
            bad.append(name)
    return bad
