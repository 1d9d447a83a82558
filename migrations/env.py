"""Alembic environment: runs on the connection mmstore hands over, one transaction per
migration (DuckDB rolls DDL back inside a failed transaction)."""

from alembic import context

from mmstore.storage.migrations import DuckDBImpl  # registers Alembic's DuckDB implementation
from mmstore.storage.schema import metadata

assert DuckDBImpl.transactional_ddl

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
