"""The service's routes, one ``APIRouter`` per resource of CONTRACT.md."""

from __future__ import annotations

from fastapi import APIRouter

from mmstore.service.routes import collections, heads, records, search, status

ROUTERS: list[APIRouter] = [
    status.router,
    collections.router,
    records.router,
    search.router,
    heads.router,
]

__all__ = ["ROUTERS"]
