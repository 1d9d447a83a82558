"""R4: Hypothesis drives sequences of add, update, delete, search, save, reopen and
crash-and-reopen against a plain dictionary model: after every step the store's live ids
(catalog and index) equal the model's, and no search ever returns a deleted id.

The store holds 8-d precomputed vectors with ``ann_threshold`` 16, so ``optimize`` builds
an HNSW graph once enough records exist and searches then go through the graph, its
tombstones and its exact tail. A crash is the store's folder copied as it is on disk
while the store is open (catalog, its write-ahead log, index files: what a SIGKILL would
leave), the live store then dropped, and the copy opened in its place.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import mmstore
from tests.reliability.figures import record

DIM = 8
IDS = st.sampled_from([f"r{i}" for i in range(50)])
VEC = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=DIM, max_size=DIM).filter(
    lambda v: float(np.linalg.norm(v)) > 1e-3
)
FIELDS = {"e": {"encoder": "precomputed", "modality": "vector", "dim": DIM}}
TOTALS = {"steps": 0, "searches": 0, "crashes": 0, "runs": 0, "hits": 0, "on_hnsw": 0}


class StoreVersusDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="mms-r4-"))
        self.path = self.folder / "s"
        self.store = mmstore.open(self.path)
        self.col = self.store.create_collection("c", encoders=FIELDS, index={"ann_threshold": 16})
        self.model: dict[str, np.ndarray] = {}
        self.deleted: set[str] = set()
        TOTALS["runs"] += 1

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- writes -------------------------------------------------------------------------
    @rule(items=st.dictionaries(IDS, VEC, min_size=1, max_size=12))
    def upsert(self, items: dict[str, list[float]]) -> None:
        self.col.ingest([{"id": k, "e": v} for k, v in items.items()])
        for k, v in items.items():
            self.model[k] = np.asarray(v, np.float32)
            self.deleted.discard(k)

    @rule(ids=st.lists(IDS, min_size=1, max_size=6, unique=True))
    def delete(self, ids: list[str]) -> None:
        gone = self.col.delete(ids)
        assert gone == sum(i in self.model for i in ids)
        for i in ids:
            if self.model.pop(i, None) is not None:
                self.deleted.add(i)

    # -- persistence ----------------------------------------------------------------------
    @rule()
    def save(self) -> None:
        self.col.optimize()

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self._open()

    @rule()
    def crash_and_reopen(self) -> None:
        image = self.folder / "image"
        shutil.copytree(self.path, image)  # the files as a SIGKILL would leave them
        self.store.close()
        shutil.rmtree(self.path)
        image.rename(self.path)
        self._open()
        TOTALS["crashes"] += 1

    def _open(self) -> None:
        self.store = mmstore.open(self.path)
        self.col = self.store.collection("c")

    # -- reads ----------------------------------------------------------------------------
    @rule(q=VEC, k=st.integers(1, 12))
    def search(self, q: list[float], k: int) -> None:
        self._check_search(np.asarray(q, np.float32), k)

    def _check_search(self, q: np.ndarray, k: int) -> None:
        hits = self.col.search(vector=q, k=k)
        TOTALS["searches"] += 1
        TOTALS["on_hnsw"] += self.col.indexes.get(self.col.fields["e"]).kind == "hnsw"
        TOTALS["hits"] += len(hits)
        assert not set(hits.ids) & self.deleted, "a deleted id came back"
        assert set(hits.ids) <= set(self.model), "an id the model does not have"
        assert len(hits) == min(k, len(self.model))

    @invariant()
    def live_ids_agree(self) -> None:
        TOTALS["steps"] += 1
        assert len(self.col) == len(self.model)
        field = self.col.fields["e"]
        index_vids = set(self.col.indexes.get(field).live_vids().tolist())
        catalog_vids = set(self.col.indexes.live_vids(field).tolist())
        assert index_vids == catalog_vids
        assert len(index_vids) == len(self.model)
        if self.model:
            stored = {r["id"] for r in self.col.get(sorted(self.model))}
            assert stored == set(self.model)
        probe = np.random.default_rng(TOTALS["steps"]).normal(size=DIM).astype(np.float32)
        self._check_search(probe, 10)  # every state is searched, not only on search steps


StoreVersusDict.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
    # no shrinking: a failing sequence is reported as found (shrinking one with store
    # reopens and crash copies can outlast CI); checked to fail when deletions are dropped
    phases=(Phase.explicit, Phase.generate),
)
TestStoreVersusDict = StoreVersusDict.TestCase


def test_zz_record_the_figure() -> None:
    """Runs after the state machine in this module (pytest keeps the file's order)."""
    assert TOTALS["runs"] > 0 and TOTALS["searches"] > 0 and TOTALS["on_hnsw"] > 0
    record(
        "R4",
        "TestStoreVersusDict",
        f"{TOTALS['runs']} sequences, {TOTALS['steps']} checked states, "
        f"{TOTALS['searches']} searches ({TOTALS['on_hnsw']} on an HNSW graph, "
        f"{TOTALS['hits']} hits), {TOTALS['crashes']} "
        "crash-and-reopens: live ids always equal the model's, 0 deleted ids returned",
    )
