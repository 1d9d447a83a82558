"""Built-in plugin: writes every lifecycle event to the ``mmstore.events`` logger."""

from __future__ import annotations

import dataclasses
import logging

import mmstore
from mmstore.events import Event

log = logging.getLogger("mmstore.events")


@mmstore.hookimpl
def mmstore_track_event(event: Event) -> None:
    if log.isEnabledFor(logging.INFO):
        fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(event).items())
        log.info("%s(%s)", type(event).__name__, fields)
