"""``run(path, host, port, settings)``: open the store for writing (the service is its
single writer), serve it with uvicorn until interrupted, then close it. While it runs,
``<store>/service.json`` names the address so other tools can say who holds the store."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mmstore.service.settings import Settings
from mmstore.store import open as open_store

log = logging.getLogger(__name__)
SERVICE_FILE = "service.json"


def service_address(path: str | Path) -> str | None:
    """The URL of the service that holds the store at ``path``, if one says it does."""
    try:
        data = json.loads((Path(path) / SERVICE_FILE).read_text())
        return str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(
    path: str | Path,
    host: str | None = None,
    port: int | None = None,
    settings: Settings | None = None,
    **uvicorn_options: Any,
) -> None:
    """Serve the store at ``path`` on ``host:port`` (those given win over ``settings``)."""
    import uvicorn

    from mmstore.service.app import create_app

    settings = settings or Settings()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=updates)
    store = open_store(path)
    marker = store.path / SERVICE_FILE
    try:
        app = create_app(store, settings)
        marker.write_text(
            json.dumps({"url": f"http://{settings.host}:{settings.port}", "pid": os.getpid()})
        )
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=uvicorn_options.pop("log_level", "info"),
            **uvicorn_options,
        )
        app.state.jobs.join(timeout=60)
    finally:
        marker.unlink(missing_ok=True)
        store.close()
