"""Queries: resolving, encoding and searching one field or several, fused
(:mod:`~mmstore.search.searcher`)."""
