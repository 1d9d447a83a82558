"""``run(path, host, port, settings)``: open the store for writing (the service is its
single writer), serve it with uvicorn until SIGTERM or Ctrl-C, then let the requests in
flight finish (``shutdown_grace_s``) and the running jobs too (up to 60 s; the others are
marked interrupted at the next start), and close it. While it runs,
``<store>/service.json`` names the address so other tools can say who holds the store."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
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
        with stop_signals():
            uvicorn.run(
                app,
                host=settings.host,
                port=settings.port,
                log_level=uvicorn_options.pop("log_level", "info"),
                timeout_graceful_shutdown=uvicorn_options.pop(
                    "timeout_graceful_shutdown", settings.shutdown_grace_s
                ),
                **uvicorn_options,
            )
        app.state.jobs.join(timeout=60)
    finally:
        marker.unlink(missing_ok=True)
        store.close()


class _Stopped(Exception):
    """SIGTERM or SIGINT, raised again by uvicorn once it has drained the requests."""


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """uvicorn handles SIGTERM and SIGINT while it serves (it stops accepting, lets the
    requests in flight finish), then raises the signal again, whose default action would
    end the process before the jobs are joined and the store closed: here that signal
    ends the block instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signal.Signals(signum).name)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except _Stopped as e:
        log.info("stopped by %s: requests drained, closing the store", e)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
