"""A search hit in one line of the terminal: the text of the field asked for (``--show``),
else of the field searched, else the hit's first text; media as what they are
(``[audio WAV 1.8 s]``, ``[image PNG 640x480]``), never their stored source dicts."""

from __future__ import annotations

from typing import Any

from mmstore.errors import UnknownNameError
from mmstore.hits import Hit

WIDTH = 80


def preview(hit: Hit, show: str | None = None) -> str:
    """What ``mmstore search`` prints for ``hit`` after its score and id."""
    values = hit.values or {}
    if show is not None:
        if show not in values:
            raise UnknownNameError("field to show", show, values, hint=f"record {hit.id!r}")
        return _one(values[show])
    if isinstance(values.get(hit.field), str):
        return _one(values[hit.field])
    texts = [v for v in values.values() if isinstance(v, str)]
    if texts:
        return _one(texts[0])
    return _one(values.get(hit.field, next(iter(values.values()), "")))


def _one(value: Any) -> str:
    if isinstance(value, str):
        return " ".join(value.split())[:WIDTH]
    if isinstance(value, dict) and "format" in value:
        return _media(value)
    return str(value)[:WIDTH] if value is not None else ""


def _media(source: dict[str, Any]) -> str:
    if "seconds" in source:
        return f"[audio {source['format']} {float(source['seconds']):.1f} s]"
    if "width" in source and "height" in source:
        return f"[image {source['format']} {source['width']}x{source['height']}]"
    return f"[{source['format']}]"
