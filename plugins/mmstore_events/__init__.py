"""Built-in plugin: writes every lifecycle event to the ``mmstore.events`` logger."""

from __future__ import annotations

import dataclasses
import logging

from mmstore.plugin import Event, hookimpl

log = logging.getLogger("mmstore.events")


@hookimpl
def mmstore_track_event(event: Event) -> None:
    if log.isEnabledFor(logging.INFO):
        fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(event).items())
        log.info("%s(%s)", type(event).__name__, fields)
