"""mmstore.Client against a real uvicorn server with keys: the same calls as on an
embedded store give the same results, and errors come back as the same exception classes.

Bad inputs tried: an unknown collection, a bad record (RecordError naming it), k over the
limit, a read-only key writing, a key for another collection, no key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmstore
from mmstore.service import Settings
from mmstore.service.app import create_app
from mmstore.service.keys import KeyStore
from tests.ranking import assert_same_ranking
from tests.servers import running
from tests.test_service import VEC, cluster_records


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = tmp_path_factory.mktemp("client") / "store"
    store = mmstore.open(path)
    keys = KeyStore(store.catalog)
    _, admin = keys.create("admin", ["admin"], "*")
    _, reader = keys.create("reader", ["read"], ["vecs"])
    app = create_app(store, Settings(auth=True, max_k=50))
    try:
        with running(app) as url:
            yield {"url": url, "admin": admin, "reader": reader, "store": store}
    finally:
        store.close()


def test_client_mirrors_the_embedded_api(served: dict[str, Any], tmp_path: Path) -> None:
    records = cluster_records()
    with mmstore.Client(served["url"], served["admin"]) as client:
        remote = client.create_collection("vecs", encoders=VEC)
        report = remote.ingest(records)
        assert isinstance(report, mmstore.IngestReport)
        assert report.written == len(records) and len(remote) == len(records)
        with mmstore.open(tmp_path / "local") as local_store:
            local = local_store.create_collection("vecs", encoders=VEC)
            local.ingest(records)
            query = np.asarray(records[0]["emb"]) + 0.01
            for kwargs in (
                {"vector": query},
                {"record": "r1"},
                {"record": "r2", "where": {"label": "k2"}},
            ):
                got, want = remote.search(k=5, **kwargs), local.search(k=5, **kwargs)
                assert got.ids == want.ids
                assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
                assert got[0].label == want[0].label and got[0].meta == want[0].meta
        assert remote.get(["r3"])[0]["id"] == "r3"
        assert remote.delete(["r3", "nope"]) == 1 and len(remote) == len(records) - 1
        trained = remote.train_head("clf", inputs=["emb"], epochs=30, patience=5)
        assert isinstance(trained, mmstore.HeadReport) and trained.metrics["accuracy"] > 0.5
        assert [h["name"] for h in remote.heads()] == ["clf"]
        assert remote.predict("clf", ["r0"])[0]["label"] == "k0"
        assert client.collections() == ["vecs"]
        with pytest.raises(mmstore.UnknownNameError):
            client.collection("nope")
        with pytest.raises(mmstore.RecordError) as err:
            remote.ingest([{"id": "bad", "emb": [1.0, "x"]}])
        assert err.value.record_id == "bad"
        with pytest.raises(mmstore.MMStoreError, match="HTTP 422"):
            remote.search(vector=query, k=500)


def test_keys_limit_what_the_client_may_do(served: dict[str, Any]) -> None:
    with mmstore.Client(served["url"], served["reader"]) as client:
        col = client.collection("vecs")
        assert len(col.search(record="r1", k=3)) == 3
        with pytest.raises(mmstore.MMStoreError, match="HTTP 403"):
            col.delete(["r1"])
        with pytest.raises(mmstore.MMStoreError, match="HTTP 403"):
            client.create_collection("other", encoders=VEC)
    with mmstore.Client(served["url"]) as anonymous:
        assert anonymous.health()["status"] == "ok"
        with pytest.raises(mmstore.MMStoreError, match="HTTP 401"):
            anonymous.collections()


def test_search_many_over_http_mirrors_the_embedded_call(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """One request for a batch; the same hits, in the same order, as the embedded call.
    Bad inputs: rows of two widths, a zero row, k over the limit, more queries than
    max_batch, both vectors and values."""
    records = cluster_records()
    with mmstore.Client(served["url"], served["admin"]) as client:
        names = client.collections()
        remote = (
            client.collection("vecs")
            if "vecs" in names
            else client.create_collection("vecs", encoders=VEC)
        )
        remote.ingest(records)  # all of them, whatever the other tests deleted
        with mmstore.open(tmp_path / "local") as local_store:
            local = local_store.create_collection("vecs", encoders=VEC)
            local.ingest(records)
            queries = np.asarray([r["emb"] for r in records[:12]], np.float32) + 0.01
            for where in (None, {"label": "k1"}):
                got = remote.search_many(queries, k=4, where=where)
                want = local.search_many(queries, k=4, where=where)
                assert len(got) == len(want)
                for g, w in zip(got, want, strict=True):  # the two indexes are laid out
                    assert_same_ranking(g.ids, g.scores, w.ids, w.scores)  # differently
                assert [h[0].label for h in got] == [h[0].label for h in want]
        assert remote.search_many([], k=3) == []
        bad_rows = [[0.0] * 8, [1.0] * 7]
        with pytest.raises(mmstore.InvalidInputError, match="not a numeric array|shape"):
            remote.search_many(bad_rows)
        with pytest.raises(mmstore.InvalidInputError, match=r"rows \[1\] are zero"):
            remote.search_many([[1.0] * 8, [0.0] * 8])
        with pytest.raises(mmstore.MMStoreError, match="HTTP 422"):
            remote.search_many(queries, k=500)
        with pytest.raises(mmstore.MMStoreError, match="HTTP 413"):
            remote.search_many(np.ones((1001, 8)))
        with pytest.raises(mmstore.InvalidInputError, match="one batch of queries"):
            remote.search_many(queries, emb=[[1.0] * 8])
