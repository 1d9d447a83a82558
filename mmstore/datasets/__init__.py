"""Stored vectors read back for training: row-aligned by record id
(:mod:`~mmstore.datasets.aligned`) or as of a timestamp across collections
(:mod:`~mmstore.datasets.asof`)."""
