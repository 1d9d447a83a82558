"""Alembic environment and versions of the catalog schema (installed as mmstore._migrations)."""
