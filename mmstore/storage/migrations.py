"""Runs the Alembic migrations that ship inside the package (``mmstore._migrations``)."""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.ddl.impl import DefaultImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from mmstore.errors import SchemaError
from mmstore.storage.segments import SegmentFiles


class DuckDBImpl(DefaultImpl):
    """Alembic's DuckDB dialect support (duckdb-engine ships none); DDL is transactional
    in DuckDB, so each migration runs in one transaction."""

    __dialect__ = "duckdb"
    transactional_ddl = True


def alembic_config(conn: Connection, segments: SegmentFiles | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts and the given connection, and the
    store's segment files (None: an encrypted store, which keeps vectors in the catalog)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mmstore._migrations")))
    cfg.attributes["connection"] = conn
    cfg.attributes["segments"] = segments
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mmstore._migrations")))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection, segments: SegmentFiles | None) -> str | None:
    """Bring the catalog to the newest schema (moving vectors into ``segments``, unless
    None); return the revision it had before."""
    before = current_revision(conn)
    if conn.in_transaction():
        conn.commit()
    head = head_revision()
    if before == head:
        return before
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config(conn)).walk_revisions()}
    if before is not None and before not in known:
        raise SchemaError(
            f"catalog schema revision {before!r} is newer than this mmstore knows (head "
            f"{head!r}); upgrade mmstore"
        )
    command.upgrade(alembic_config(conn, segments), "head")
    if conn.in_transaction():
        conn.commit()
    return before


def schema_differences(conn: Connection, metadata: sa.MetaData) -> list[str]:
    """How the catalog differs from the declared schema: tables, column names in order,
    types, nullability and primary keys. (Alembic's autogenerate comparison cannot run on
    DuckDB: SQLAlchemy's primary-key reflection queries a type DuckDB lacks.)"""
    inspector = sa.inspect(conn)
    found = set(inspector.get_table_names()) - {"alembic_version"}
    out = [f"table {t} missing" for t in sorted(set(metadata.tables) - found)]
    out += [f"table {t} not declared" for t in sorted(found - set(metadata.tables))]
    for name in sorted(found & set(metadata.tables)):
        out += _table_differences(conn, inspector, metadata.tables[name])
    return out


def _table_differences(conn: Connection, inspector: sa.Inspector, table: sa.Table) -> list[str]:
    actual = inspector.get_columns(table.name)
    declared = list(table.columns)
    if [c["name"] for c in actual] != [c.name for c in declared]:
        return [
            f"{table.name}: columns {[c['name'] for c in actual]} != {[c.name for c in declared]}"
        ]
    out = []
    for got, want in zip(actual, declared, strict=True):
        want_type = want.type.compile(dialect=conn.dialect)
        got_type = got["type"].compile(dialect=conn.dialect)
        if _norm(got_type) != _norm(want_type):
            out.append(f"{table.name}.{want.name}: type {got_type} != {want_type}")
        if bool(got["nullable"]) != bool(want.nullable):
            out.append(f"{table.name}.{want.name}: nullable {got['nullable']} != {want.nullable}")
    pk = conn.exec_driver_sql(
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
        "AND constraint_type = 'PRIMARY KEY'",
        (table.name,),
    ).fetchall()
    got_pk = list(pk[0][0]) if pk else []
    want_pk = [c.name for c in table.primary_key.columns]
    if got_pk != want_pk:
        out.append(f"{table.name}: primary key {got_pk} != {want_pk}")
    return out


def _norm(type_name: str) -> str:
    aliases = {"DOUBLE PRECISION": "DOUBLE", "BYTEA": "BLOB", "TEXT": "VARCHAR"}
    return aliases.get(type_name.upper(), type_name.upper())
