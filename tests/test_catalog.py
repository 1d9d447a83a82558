"""The catalog: Alembic migrations produce exactly the declared schema, run on open and by
`mmstore migrate`, one transaction each; one writer process at a time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import mmstore
from mmstore.storage import migrations as migrate
from mmstore.storage import schema
from mmstore.storage.catalog import Catalog
from mmstore.store import CATALOG_FILE


def test_migrations_produce_exactly_the_declared_schema(store: mmstore.Store) -> None:
    assert migrate.schema_differences(store.catalog.conn, schema.metadata) == []
    tables = set(sa.inspect(store.catalog.conn).get_table_names())
    assert tables == set(schema.metadata.tables) | {"alembic_version"}


def _altered(change: str) -> sa.MetaData:
    copy = sa.MetaData()
    for table in schema.metadata.tables.values():
        table.to_metadata(copy)
    records = copy.tables["mms_records"]
    if change == "column":
        records.append_column(sa.Column("surprise", sa.Integer))
    elif change == "type":
        records.c.rev.type = sa.Integer()
    elif change == "nullable":
        records.c.label.nullable = False
    elif change == "table":
        sa.Table("mms_extra", copy, sa.Column("x", sa.Integer))
    return copy


@pytest.mark.parametrize("change", ["column", "type", "nullable", "table"])
def test_schema_comparison_detects_each_kind_of_difference(
    store: mmstore.Store, change: str
) -> None:
    """The comparison above can fail: a declared schema that differs is reported."""
    assert migrate.schema_differences(store.catalog.conn, _altered(change)) != []


def test_open_records_the_head_revision(store: mmstore.Store) -> None:
    assert migrate.current_revision(store.catalog.conn) == migrate.head_revision()


def _migrate_cli(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mmstore", "migrate", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_migrate_command_upgrades_an_empty_catalog(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    catalog = Catalog(tmp_path / "s" / CATALOG_FILE)
    catalog.close()
    assert f"(empty) -> {migrate.head_revision()}" in _migrate_cli(tmp_path / "s")
    assert "is current" in _migrate_cli(tmp_path / "s")


def test_newer_schema_than_known_is_refused(store_path: Path) -> None:
    mmstore.open(store_path).close()
    catalog = Catalog(store_path / CATALOG_FILE)
    catalog.conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    catalog.conn.commit()
    catalog.close()
    with pytest.raises(mmstore.SchemaError, match="9999.*upgrade mmstore"):
        mmstore.open(store_path)


def test_a_failed_migration_leaves_the_old_revision(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transactional_ddl: a migration that fails half-way leaves no table behind."""
    from alembic.operations import Operations

    real = Operations.create_table
    calls = {"n": 0}

    def failing(self, name, *cols, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk on fire")
        return real(self, name, *cols, **kw)

    monkeypatch.setattr(Operations, "create_table", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        mmstore.open(store_path)
    catalog = Catalog(store_path / CATALOG_FILE)
    try:
        assert migrate.current_revision(catalog.conn) is None
        assert not set(sa.inspect(catalog.conn).get_table_names()) & set(schema.metadata.tables)
    finally:
        catalog.close()


HOLDER = textwrap.dedent("""
    import sys, time, mmstore
    store = mmstore.open(sys.argv[1])
    print("ready", flush=True)
    time.sleep(60)
""")


def test_second_writer_process_gets_a_typed_error_naming_the_holder(store_path: Path) -> None:
    mmstore.open(store_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        with pytest.raises(mmstore.StoreLockedError) as err:
            mmstore.open(store_path)
        assert time.perf_counter() - start < 1.0
        assert f"PID {holder.pid}" in err.value.holder
        assert err.value.http_status == 423
    finally:
        holder.kill()
        holder.wait()
    mmstore.open(store_path).close()  # the lock goes with the process


def test_read_only_open_refuses_writes(store_path: Path) -> None:
    with mmstore.open(store_path) as store:
        store.create_collection(
            "c", encoders={"e": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
        )
        store.collection("c").ingest([{"id": "a", "e": [1, 0, 0, 0]}])
    with mmstore.open(store_path, read_only=True) as store:
        col = store.collection("c")
        assert col.search(vector=[1, 0, 0, 0], k=1).ids == ["a"]
        with pytest.raises(mmstore.ReadOnlyError):
            col.ingest([{"id": "b", "e": [0, 1, 0, 0]}])
        with pytest.raises(mmstore.ReadOnlyError):
            store.create_collection("d", encoders={"e": "hash_text"})


def test_read_only_open_of_a_missing_store_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        mmstore.open(tmp_path / "nothing", read_only=True)


def test_external_access_is_switched_off(store: mmstore.Store, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(sa.exc.DBAPIError, match="disabled|Permission"):
        store.catalog.conn.exec_driver_sql(f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')")
    store.catalog.conn.rollback()
    with pytest.raises(sa.exc.DBAPIError, match="lock|configuration"):
        store.catalog.conn.exec_driver_sql("SET enable_external_access = true")
    store.catalog.conn.rollback()


def test_memory_store_is_removed_on_close() -> None:
    store = mmstore.open(":memory:")
    path = store.path
    assert (path / CATALOG_FILE).exists()
    store.close()
    assert not path.exists()
    with pytest.raises(mmstore.StoreClosedError):
        store.collections()
