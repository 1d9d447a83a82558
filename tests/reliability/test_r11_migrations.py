"""R11: migrations upgrade a store from every earlier schema revision with 0 data changes,
and a kill mid-migration leaves the old or the new revision, never one in between.

Fixtures are built in the test (no committed files): a store is written at head through
the public API (precomputed vectors, hashed text, a fitted tabular field, API keys,
failed and skipping ingest runs, unicode ids and labels, NULL and empty labels, NULL
meta, timestamps with microseconds, 256 KiB vector blobs) plus one unfinished ingest run
(NULL ``finished_at``); then for each earlier revision N a catalog is made by Alembic
upgraded to exactly N and filled with the rows of every table that exists at N (the
collection with a fitted encoder only from 0002, when its states have a table), with
the index files beside it, as an older mmstore left them. Building takes seconds,
follows any new revision without regenerating files, and the rows are the ones
mmstore's own writers produce.

Upgrades (``mmstore.open`` from each earlier revision, ``mmstore migrate`` from the
oldest) compare every cell of every table that existed before with what is there after.

Kills: a child process opens a copy of a fixture with the upgrade instrumented and is
SIGKILLed, by itself or (paused) by the parent, at each of these points of each revision
step on the way to head: before the step's first ``op`` call, after it, before and after
Alembic stamps the new revision, and before and after the step's commit. The parent then
finds the catalog at exactly the step's old revision (kills before the commit) or its
new one (after), with that revision's tables and columns and no others, the old rows
unchanged; a normal open then completes the upgrade. Each step commits on its own, so a
kill in the second step of an upgrade from 0001 leaves 0002: the first step's new
revision, a complete schema. The normal run kills each step from the oldest store and
from the revision just before the step; ``-m nightly`` kills it from every earlier one.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import mmstore
from mmstore.service.keys import KeyStore
from mmstore.storage import migrations as migrate
from mmstore.storage import schema
from mmstore.storage.catalog import Catalog
from mmstore.store import CATALOG_FILE
from mmstore.testing import FakePlugin
from tests.reliability.figures import record

DIM, WIDE_DIM, N_VECS = 8, 65_536, 40
FITTED = "tab"  # the collection whose encoder keeps a fitted state (its table came in 0002)
STATES_TABLE = "mms_encoder_states"
SEGMENTS_TABLE = "mms_segments"  # came in 0004, which moves the vectors into it
POINTS = ("before-op", "after-op", "before-stamp", "after-stamp", "before-commit", "after-commit")
#: (start, step, point) killed by the parent while the child waits there
PAUSED = [("0001", "0002", "after-op"), ("0001", "0003", "before-commit")]
PAUSED += [("0002", "0003", "after-stamp")]

Rows = list[tuple[Any, ...]]
Snapshot = dict[str, tuple[list[str], Rows]]
Layout = dict[str, list[str]]


# -- revisions and catalog contents -------------------------------------------------------
def _revisions() -> list[str]:
    """Every revision, oldest first."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mmstore._migrations")))
    scripts = ScriptDirectory.from_config(cfg).walk_revisions()
    return [s.revision for s in reversed(list(scripts))]


REVISIONS = _revisions()
HEAD = REVISIONS[-1]
EARLIER = REVISIONS[:-1]


def _previous(rev: str) -> str:
    return REVISIONS[REVISIONS.index(rev) - 1]


def _layout(conn: Connection) -> Layout:
    """Tables of the catalog (but alembic_version) and their column names, in order."""
    rows = conn.exec_driver_sql(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = "
        "current_database() AND schema_name = 'main' AND table_name <> 'alembic_version' "
        "ORDER BY table_name, column_index"
    ).all()
    out: Layout = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


#: columns that record no data of the user's, left out of the comparison: an index file's
#: stamp (0005) is set by the first open that hashes the file, so it is NULL before an
#: upgrade and may not be after
NOT_DATA = {"mms_indexes": ("stamp",)}


def _snapshot(conn: Connection, folder: Path) -> Snapshot:
    """Every row of every table but alembic_version, sorted; a vector row as its values,
    wherever they are kept (the blob column before 0004, a segment file after it)."""
    out: Snapshot = {}
    for table in _layout(conn):
        if table == "mms_embeddings":
            out[table] = _vector_rows(conn, folder)
            continue
        kept = [c for c in _layout(conn)[table] if c not in NOT_DATA.get(table, ())]
        result = conn.exec_driver_sql(f'SELECT {", ".join(kept)} FROM "{table}"')
        columns = list(result.keys())
        out[table] = (columns, sorted((tuple(r) for r in result), key=repr))
    return out


def _vector_rows(conn: Connection, folder: Path) -> tuple[list[str], Rows]:
    """mms_embeddings without ``pos``, each ``vector`` cell the row's float32 bytes, read
    from its blob or straight from the segment file the catalog names (not through
    mmstore's reader)."""
    columns = [c for c in _layout(conn)["mms_embeddings"] if c != "pos"]
    segmented = "pos" in _layout(conn)["mms_embeddings"]
    cols = ", ".join(columns + (["pos"] if segmented else []))
    files: dict[tuple[str, str, str], np.ndarray] = {}
    if segmented:
        for c, f, k, name, dim, n in conn.exec_driver_sql(
            "SELECT collection, field, encoder_key, file, dim, rows FROM mms_segments"
        ):
            raw = (folder / "vectors" / c / name).read_bytes()
            files[(c, f, k)] = np.frombuffer(raw, np.float32, n * dim).reshape(n, dim)
    rows = []
    for r in conn.exec_driver_sql(f"SELECT {cols} FROM mms_embeddings"):
        row = list(r[: len(columns)])
        at = columns.index("vector")
        if row[at] is None:
            space = files[(r.collection, r.field, r.encoder_key)]
            row[at] = space[r.pos].tobytes()
        rows.append(tuple(row))
    return columns, sorted(rows, key=repr)


@dataclass
class State:
    revision: str | None
    layout: Layout
    snapshot: Snapshot


def _state(folder: Path) -> State:
    """The catalog's revision, tables and rows, read without migrating."""
    catalog = Catalog(folder / CATALOG_FILE)
    try:
        conn = catalog.conn
        state = State(migrate.current_revision(conn), _layout(conn), _snapshot(conn, folder))
        conn.rollback()
        return state
    finally:
        catalog.close()


def _compare(before: Snapshot, after: Snapshot) -> tuple[int, int]:
    """(cells compared, cells changed) over every table and column in ``before``."""
    compared = changed = 0
    for table, (columns, rows) in before.items():
        assert table in after, f"table {table} is gone"
        assert after[table][0] == columns, f"{table}: columns {after[table][0]} != {columns}"
        new_rows = after[table][1]
        compared += len(rows) * len(columns)
        changed += sum(
            a != b
            for old, new in zip(rows, new_rows, strict=False)
            for a, b in zip(old, new, strict=True)
        )
        changed += abs(len(rows) - len(new_rows)) * len(columns)
    return compared, changed


# -- the store an older mmstore wrote -------------------------------------------------------
def _vector(i: int, dim: int = DIM) -> list[float]:
    return np.random.default_rng(i).standard_normal(dim).astype(np.float32).tolist()


def _rid(i: int) -> str:
    return [f"r{i}", f"ü-記録-{i}", f"🙂 {i}", f"r{i}/x y"][i % 4]


def _vec_record(i: int, relabel: bool = False) -> dict[str, Any]:
    label = [None, "", "ラベル", f"c{i % 3}"][i % 4]
    ts = dt.datetime(2024, 2, 29, 23, 59, 59, 123_456 + i) if i % 3 else None
    meta = None if i % 5 == 0 else {"price": i * 1.5, "name": "naïve ☃ \u200b", "n": [1, None]}
    return {
        "id": _rid(i),
        "emb": _vector(i),
        "label": f"re-{label}" if relabel else label,
        "ts": ts,
        "meta": meta,
    }


def _fill_collections(store: mmstore.Store) -> None:
    vec = {"encoder": "precomputed", "modality": "vector"}
    vecs = store.create_collection("vecs", encoders={"emb": {**vec, "dim": DIM}})
    vecs.ingest([_vec_record(i) for i in range(30)])
    vecs.ingest([_vec_record(i, relabel=i < 30) for i in range(20, N_VECS)])  # rev 2
    bad = [_vec_record(N_VECS), {"id": "short", "emb": [1.0, 2.0]}]
    vecs.ingest(bad, on_error="skip")
    with pytest.raises(mmstore.MMStoreError):
        vecs.ingest([{"id": "nan", "emb": [float("nan")] * DIM}])  # a failed run
    wide = store.create_collection("wide", encoders={"emb": {**vec, "dim": WIDE_DIM}})
    wide.ingest([{"id": f"w{i}", "emb": _vector(i, WIDE_DIM)} for i in range(3)])
    docs = store.create_collection("docs", encoders={"text": {"encoder": "hash_text"}})
    docs.ingest([{"id": f"d{i}", "text": _text(i), "label": "ß"} for i in range(12)])
    tab = {"encoder": "tabular", "modality": "tabular", "numeric": ["p"], "categorical": ["b"]}
    rows = [{"id": f"t{i}", "row": {"p": i * 0.5, "b": "aé"[i % 2]}} for i in range(10)]
    store.create_collection(FITTED, encoders={"row": tab}).ingest(rows)


def _text(i: int) -> str:
    words = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum", "kiwi"]
    return f"{words[i % 9]} {words[(i * 4 + 1) % 9]} {words[(i * 7 + 2) % 9]} 日本 {i}"


def _build_source(folder: Path) -> None:
    with mmstore.open(folder, plugins=[FakePlugin()]) as store:
        _fill_collections(store)
        keys = KeyStore(store.catalog)
        keys.create("ci ☃", "read", ["vecs"])
        keys.revoke(keys.create("old", "read,write")[0].id)
        with store.catalog.transaction() as conn:  # a run an older mmstore left unfinished
            conn.execute(
                schema.ingest_runs.insert().values(
                    id=999,
                    collection="vecs",
                    started_at=dt.datetime(2025, 1, 2, 3, 4, 5, 6),
                    status="running",
                    received=7,
                    written=0,
                    unchanged=0,
                    rejected=0,
                )
            )


def _copy_filter(table: str, columns: list[str], rev: str) -> str:
    """Before the states table, the fitted collection did not exist."""
    if STATES_TABLE in _LAYOUTS[rev]:
        return ""
    if table == "mms_collections":
        return f"WHERE name <> '{FITTED}'"
    if table == "mms_encoders":
        return f"WHERE key NOT IN (SELECT encoder_key FROM src.mms_fields WHERE collection = '{FITTED}')"
    return f"WHERE collection <> '{FITTED}'" if "collection" in columns else ""


def _build_at(rev: str, source: Path, folder: Path) -> None:
    """A store at exactly ``rev`` holding the source's rows of the tables ``rev`` has (and,
    before 0004, its vectors as blobs in the catalog)."""
    columns, rows = _state(source).snapshot["mms_embeddings"]
    vid, vector = columns.index("vid"), columns.index("vector")
    vectors = pa.table(
        {"vid": [r[vid] for r in rows], "vector": pa.array([r[vector] for r in rows], pa.binary())}
    )
    folder.mkdir(parents=True)
    catalog = Catalog(folder / CATALOG_FILE)
    try:
        conn = catalog.conn
        command.upgrade(migrate.alembic_config(conn), rev)
        conn.commit()
        layout = _layout(conn)
        conn.exec_driver_sql(f"ATTACH '{source / CATALOG_FILE}' AS src (READ_ONLY)")
        catalog.raw.register("src_vectors", vectors)
        for table, columns in layout.items():
            cols = ", ".join(f'"{c}"' for c in columns)
            where = _copy_filter(table, columns, rev)
            picked = cols
            if table == "mms_embeddings" and "pos" not in columns:  # blobs, as before 0004
                picked = cols.replace('"vector"', "v.vector")
                where = f"JOIN src_vectors v USING (vid) {where}"
            conn.exec_driver_sql(
                f'INSERT INTO main."{table}" ({cols}) SELECT {picked} FROM src."{table}" {where}'
            )
        conn.commit()
        conn.exec_driver_sql("DETACH src")
        conn.commit()
    finally:
        catalog.close()
    shutil.copytree(source / "indexes", folder / "indexes")
    if "pos" in layout["mms_embeddings"]:
        shutil.copytree(source / "vectors", folder / "vectors")
    if STATES_TABLE not in _LAYOUTS[rev]:
        shutil.rmtree(folder / "indexes" / FITTED)


def _empty_layouts(folder: Path) -> dict[str, Layout]:
    """Each revision's tables and columns, from an empty catalog upgraded to it."""
    out = {}
    for rev in REVISIONS:
        (folder / rev).mkdir(parents=True)
        catalog = Catalog(folder / rev / CATALOG_FILE)
        try:
            command.upgrade(migrate.alembic_config(catalog.conn), rev)
            out[rev] = _layout(catalog.conn)
            catalog.conn.rollback()
        finally:
            catalog.close()
    return out


_LAYOUTS: dict[str, Layout] = {}


@dataclass
class Fixture:
    rev: str
    folder: Path
    state: State

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.folder, to)
        return to


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Fixture]:
    root = tmp_path_factory.mktemp("r11")
    _LAYOUTS.update(_empty_layouts(root / "empty"))
    _build_source(root / "source")
    out = {}
    for rev in EARLIER:
        _build_at(rev, root / "source", root / rev)
        out[rev] = Fixture(rev, root / rev, _state(root / rev))
    return out


def test_fixtures_are_stores_at_each_earlier_revision(fixtures: dict[str, Fixture]) -> None:
    """Each fixture is at exactly its revision, with that revision's tables, all filled."""
    assert {"0001", "0002"} <= set(fixtures)
    rows = 0
    for rev, fx in fixtures.items():
        assert fx.state.revision == rev
        assert fx.state.layout == _LAYOUTS[rev]
        empty = [t for t, (_, r) in fx.state.snapshot.items() if not r]
        assert not empty, f"{rev}: tables without rows: {empty}"
        rows += sum(len(r) for _, r in fx.state.snapshot.values())
    record(
        "R11",
        "test_fixtures_are_stores_at_each_earlier_revision",
        f"{len(fixtures)} stores ({', '.join(fixtures)}), every table filled, {rows} rows",
    )


# -- upgrades -------------------------------------------------------------------------------
def _check_upgraded(folder: Path, before: State, *, declared: bool = True) -> int:
    """Head, its tables and columns (and with ``declared``, the declared types, nullability
    and keys), new tables empty, old cells unchanged; returns the cells compared."""
    after = _state(folder)
    assert after.revision == HEAD
    assert after.layout == _LAYOUTS[HEAD]
    if declared:
        _check_declared(folder)
    for table in set(after.snapshot) - set(before.snapshot):
        if table == SEGMENTS_TABLE:  # filled by 0004's move: one row per space
            spaces = {(r[1], r[3], r[4]) for r in after.snapshot["mms_embeddings"][1]}
            assert len(after.snapshot[table][1]) == len(spaces)
            continue
        assert after.snapshot[table][1] == [], f"new table {table} is not empty"
    compared, changed = _compare(before.snapshot, after.snapshot)
    assert changed == 0, f"{changed} of {compared} cells changed"
    return compared


def _check_declared(folder: Path) -> None:
    catalog = Catalog(folder / CATALOG_FILE)
    try:
        assert migrate.schema_differences(catalog.conn, schema.metadata) == []
        catalog.conn.rollback()
    finally:
        catalog.close()


def test_open_upgrades_every_earlier_revision_with_no_data_change(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    total = 0
    for rev, fx in fixtures.items():
        folder = fx.copy(tmp_path / rev)
        mmstore.open(folder).close()
        total += _check_upgraded(folder, fx.state)
        mmstore.open(folder).close()  # a second open finds it current and changes nothing
        assert _compare(fx.state.snapshot, _state(folder).snapshot)[1] == 0
    record(
        "R11",
        "test_open_upgrades_every_earlier_revision_with_no_data_change",
        f"from {' and '.join(fixtures)}: 0 of {total:,} cells changed; head {HEAD} after",
    )


def test_migrate_command_upgrades_the_oldest_store_with_no_data_change(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    fx = fixtures[EARLIER[0]]
    folder = fx.copy(tmp_path / "s")
    out = subprocess.run(
        [sys.executable, "-m", "mmstore", "migrate", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert f"schema {fx.rev} -> {HEAD}" in out
    compared = _check_upgraded(folder, fx.state)
    record(
        "R11",
        "test_migrate_command_upgrades_the_oldest_store_with_no_data_change",
        f"mmstore migrate from {fx.rev}: 0 of {compared:,} cells changed",
    )


def _searches(folder: Path, with_states: bool) -> int:
    """Old vectors are found, a new record joins them, fitted states are reused."""
    checked = 0
    with mmstore.open(folder, plugins=[FakePlugin()]) as store:
        vecs = store.collection("vecs")
        for i in range(N_VECS):
            assert vecs.search(vector=_vector(i), k=3).ids[0] == _rid(i)
            checked += 1
        assert store.collection("wide").search(vector=_vector(2, WIDE_DIM), k=1).ids == ["w2"]
        assert store.collection("docs").search(text=_text(5), k=1).ids == ["d5"]
        vecs.ingest([{"id": "after", "emb": _vector(1000)}])
        assert vecs.search(vector=_vector(1000), k=1).ids == ["after"]
        if with_states:
            store.collection(FITTED).ingest([{"id": "t-new", "row": {"p": 1.0, "b": "a"}}])
    return checked + 3


def test_old_stores_search_after_upgrade_with_and_without_index_files(
    fixtures: dict[str, Fixture], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The old index files still match their manifests after the upgrade (loaded, not
    rebuilt); without them, the indexes are rebuilt from the catalog."""
    checked = rebuilt = 0
    for rev, fx in fixtures.items():
        for files in (True, False):
            folder = fx.copy(tmp_path / f"{rev}-{files}")
            if not files:
                shutil.rmtree(folder / "indexes")
            caplog.clear()
            checked += _searches(folder, STATES_TABLE in _LAYOUTS[rev])
            warned = [r for r in caplog.records if "rebuilt" in r.getMessage()]
            assert bool(warned) != files, [r.getMessage() for r in warned]
            rebuilt += len(warned)
            if STATES_TABLE in _LAYOUTS[rev]:
                states = _state(folder).snapshot[STATES_TABLE][1]
                assert states == fx.state.snapshot[STATES_TABLE][1], "state refitted"
    record(
        "R11",
        "test_old_stores_search_after_upgrade_with_and_without_index_files",
        f"from {' and '.join(fixtures)}: {checked} searches return the expected ids, with the "
        f"old index files (0 rebuilt) and without them ({rebuilt} rebuilt from the catalog); "
        "fitted states reused",
    )


# -- kills ----------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from alembic.operations import Operations
    from alembic.runtime import migration
    from sqlalchemy.engine import Connection
    import mmstore

    path, target, point, how = sys.argv[1:5]
    seen = {"step": None, "ops": 0, "stamped": False}

    def stop(where):
        if seen["step"] != target or where != point:
            return
        if how == "self":
            os.kill(os.getpid(), signal.SIGKILL)
        print("paused", flush=True)
        time.sleep(120)

    step_init = migration.RevisionStep.__init__
    def init(self, *args, **kw):
        step_init(self, *args, **kw)
        fn, rev = self.migration_fn, self.revision.revision
        def run(**k):
            seen.update(step=rev, ops=0)
            return fn(**k)
        self.migration_fn = run
    migration.RevisionStep.__init__ = init

    invoke = Operations.invoke
    def invoke_at(self, operation):
        seen["ops"] += 1
        first = seen["ops"] == 1
        if first:
            stop("before-op")
        out = invoke(self, operation)
        if first:
            stop("after-op")
        return out
    Operations.invoke = invoke_at

    update = migration.HeadMaintainer.update_to_step
    def update_at(self, step):
        stop("before-stamp")
        update(self, step)
        seen["stamped"] = True
        stop("after-stamp")
    migration.HeadMaintainer.update_to_step = update_at

    commit = Connection._commit_impl
    def commit_at(self):
        stamped, seen["stamped"] = seen["stamped"], False
        if stamped:
            stop("before-commit")
        commit(self)
        if stamped:
            stop("after-commit")
    Connection._commit_impl = commit_at

    mmstore.open(path).close()
    print("finished", flush=True)
""")


def _kill_child(folder: Path, step: str, point: str, paused: bool) -> None:
    """Run the instrumented upgrade; it dies by SIGKILL at ``point`` of ``step``."""
    args = [sys.executable, "-c", CHILD, str(folder), step, point, "pause" if paused else "self"]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if paused:
            assert child.stdout.readline().strip() == "paused", f"{step} {point} never reached"
            os.kill(child.pid, signal.SIGKILL)
        out = child.stdout.read()
        assert child.wait(timeout=60) == -signal.SIGKILL, f"{step} {point}: not killed ({out})"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _kill_cases(every: bool = False) -> list[tuple[str, str, str, bool]]:
    """(start revision, step killed, point, paused by the parent). Each step is killed at
    every point from the oldest store (which takes every step) and from the revision just
    before it (the store the last release left); ``every`` adds each start in between,
    which the nightly tier runs (the cases grow as the square of the revisions)."""
    cases = []
    for start in EARLIER:
        for step in REVISIONS[REVISIONS.index(start) + 1 :]:
            if every or start in (REVISIONS[0], _previous(step)):
                cases += [(start, step, point, False) for point in POINTS]
    return cases + [(start, step, point, True) for start, step, point in PAUSED]


def _check_killed(folder: Path, fx: Fixture, step: str, point: str) -> str:
    """Exactly the step's old or new revision, its tables only, old rows unchanged; an
    open then completes the upgrade. Returns "old" or "new"."""
    state = _state(folder)
    old, new = _previous(step), step
    assert state.revision in (old, new), f"{step} {point}: revision {state.revision}"
    assert state.revision == (new if point == "after-commit" else old), f"{step} {point}"
    assert state.layout == _LAYOUTS[state.revision], f"{step} {point}: tables in between"
    assert _compare(fx.state.snapshot, state.snapshot)[1] == 0
    mmstore.open(folder).close()
    _check_upgraded(folder, fx.state, declared=False)
    return "old" if state.revision == old else "new"


def test_kill_mid_migration_leaves_the_old_or_the_new_revision(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    kill_mid_migration(
        fixtures, tmp_path, "test_kill_mid_migration_leaves_the_old_or_the_new_revision"
    )


@pytest.mark.nightly
def test_kill_mid_migration_from_every_revision(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    kill_mid_migration(fixtures, tmp_path, "test_kill_mid_migration_from_every_revision", True)


def kill_mid_migration(
    fixtures: dict[str, Fixture], tmp_path: Path, test: str, every: bool = False
) -> None:
    outcomes = {"old": 0, "new": 0}
    cases = _kill_cases(every)
    for n, (start, step, point, paused) in enumerate(cases):
        fx = fixtures[start]
        folder = fx.copy(tmp_path / str(n))
        _kill_child(folder, step, point, paused)
        outcomes[_check_killed(folder, fx, step, point)] += 1
    assert len(cases) >= 10
    starts = sorted({start for start, *_ in cases})
    record(
        "R11",
        test,
        f"{len(cases)} SIGKILLs ({len(PAUSED)} by the parent) at {len(POINTS)} points of each "
        f"step from {' and '.join(starts)} (each step from the oldest store and from the "
        f"revision before it{'; every start' if every else ''}): {outcomes['old']} old, "
        f"{outcomes['new']} new, 0 in between; every reopen completed the upgrade with 0 "
        "cells changed",
    )
