"""Runs the Alembic migrations that ship inside the package (``mmstore._migrations``)."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.ddl.impl import DefaultImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from mmstore.errors import SchemaError


class DuckDBImpl(DefaultImpl):
    """Alembic's DuckDB dialect support (duckdb-engine ships none); DDL is transactional
    in DuckDB, so each migration runs in one transaction."""

    __dialect__ = "duckdb"
    transactional_ddl = True


def alembic_config(conn: Connection) -> Config:
    """An Alembic config pointing at the packaged scripts and the given connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mmstore._migrations")))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mmstore._migrations")))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection) -> str | None:
    """Bring the catalog to the newest schema; return the revision it had before."""
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
    command.upgrade(alembic_config(conn), "head")
    if conn.in_transaction():
        conn.commit()
    return before
