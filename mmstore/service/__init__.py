"""The HTTP embedding service (issue 5): ``create_app(store, settings)`` builds the FastAPI
app of CONTRACT.md; ``serve.run`` starts it under uvicorn (``mmstore serve``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmstore.service.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mmstore.store import Store

__all__ = ["Settings", "create_app"]


def create_app(store: Store, settings: Settings | None = None) -> FastAPI:
    """Build the app (imported lazily: FastAPI loads only when the service is used)."""
    from mmstore.service.app import create_app as _create

    return _create(store, settings)
