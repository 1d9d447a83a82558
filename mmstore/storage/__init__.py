"""The catalog and what lies beside it on disk, the lowest layer above the errors:
:mod:`~mmstore.storage.catalog` (the DuckDB connection), :mod:`~mmstore.storage.schema`
and :mod:`~mmstore.storage.migrations`, :mod:`~mmstore.storage.media`,
:mod:`~mmstore.storage.atomic` files, :mod:`~mmstore.storage.wal` checks,
:mod:`~mmstore.storage.failures` (what a refused write becomes) and
:mod:`~mmstore.storage.filters` (structured filters as SQL)."""
