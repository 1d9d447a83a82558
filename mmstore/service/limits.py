"""The service's value limits: text length, image pixels and audio duration, checked on
each record and query value before the store is called (and before the store lock is
taken), from headers only: an image's size and an audio file's duration are read without
decoding. The modality plugins keep their own limits; these are the service's, usually
tighter, the same for every collection, and reported by ``/health``.

A value that a probe cannot read passes here: the modality rejects it with its own error.
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmstore.errors import LimitExceededError
from mmstore.ingest.report import Rejected
from mmstore.service.settings import Settings

Probe = Callable[[Any, Settings], str | None]


def _text(value: Any, settings: Settings) -> str | None:
    if isinstance(value, str) and len(value) > settings.max_text_chars:
        return (
            f"{len(value):,} characters, over the service limit of "
            f"max_text_chars={settings.max_text_chars:,}; shorten or split the text"
        )
    return None


def _image(value: Any, settings: Settings) -> str | None:
    if isinstance(value, np.ndarray) and value.ndim >= 2:
        return _too_many_pixels(value.shape[1], value.shape[0], settings)
    if not isinstance(value, bytes | bytearray):
        return None
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning: the size decides here
            with Image.open(io.BytesIO(value)) as im:  # reads the header only
                width, height = im.size
    except Image.DecompressionBombError as e:
        return f"{e}; over the service limit max_image_pixels={settings.max_image_pixels:,}"
    except Exception:  # not an image Pillow can read: the modality will say why
        return None
    return _too_many_pixels(width, height, settings)


def _too_many_pixels(width: int, height: int, settings: Settings) -> str | None:
    if width * height > settings.max_image_pixels:
        return (
            f"image is {width}x{height} = {width * height:,} pixels, over the service limit "
            f"max_image_pixels={settings.max_image_pixels:,}; downscale it"
        )
    return None


def _audio(value: Any, settings: Settings) -> str | None:
    seconds = _array_seconds(value) if isinstance(value, tuple | dict) else None
    if isinstance(value, bytes | bytearray):
        import soundfile

        try:
            seconds = soundfile.info(io.BytesIO(value)).duration  # reads the header only
        except Exception:  # not audio libsndfile can read: the modality will say why
            return None
    if seconds is not None and seconds > settings.max_audio_seconds:
        return (
            f"audio lasts {seconds:.1f} s, over the service limit "
            f"max_audio_seconds={settings.max_audio_seconds:g}; cut it into shorter clips"
        )
    return None


def _array_seconds(value: tuple[Any, ...] | dict[str, Any]) -> float | None:
    """The length of ``(samples, sample_rate)`` (or its dict form), if it is one."""
    pair = (value.get("array"), value.get("sample_rate")) if isinstance(value, dict) else value
    if len(pair) != 2 or not isinstance(pair[0], np.ndarray):
        return None
    samples, rate = pair
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
        return None
    return float(samples.shape[0] if samples.ndim else 0) / float(rate)


PROBES: dict[str, Probe] = {"text": _text, "image": _image, "audio": _audio}


def problem(modality: str, value: Any, settings: Settings) -> str | None:
    """Why ``value`` of ``modality`` is over a service limit, or None."""
    probe = PROBES.get(modality)
    return probe(value, settings) if probe else None


def check_records(
    records: list[dict[str, Any]],
    modalities: Mapping[str, str],
    settings: Settings,
    skip: bool,
) -> tuple[list[dict[str, Any]], list[Rejected]]:
    """The records within the limits and those left out. ``modalities`` maps each field of
    the collection to its modality. Without ``skip`` the first record over a limit raises
    :class:`LimitExceededError` naming it and its field."""
    kept: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    for record in records:
        error = _record_problem(record, modalities, settings)
        if error is None:
            kept.append(record)
        elif skip:
            rejected.append(Rejected(str(error.record_id), error.field, error.problem))
        else:
            raise error
    return kept, rejected


def renumbered(
    rejected: list[Rejected], records: list[dict[str, Any]], kept: list[dict[str, Any]]
) -> list[Rejected]:
    """Rejections of an ingest of ``kept`` (the records within the limits) as positions of
    ``records``: a record without a usable id is named by its position ("#3"), which the
    records left out before it would otherwise shift."""
    if len(kept) == len(records):
        return rejected
    held = {id(r) for r in kept}
    at = [i for i, r in enumerate(records) if id(r) in held]
    out = []
    for r in rejected:
        found = re.fullmatch(r"#(\d+)", r.id) if r.field in (None, "id") else None
        if found and int(found[1]) < len(at):
            r = dataclasses.replace(r, id=f"#{at[int(found[1])]}")
        out.append(r)
    return out


def _record_problem(
    record: dict[str, Any], modalities: Mapping[str, str], settings: Settings
) -> LimitExceededError | None:
    for field, modality in modalities.items():
        why = problem(modality, record.get(field), settings)
        if why:
            return LimitExceededError(record.get("id"), field, why)
    return None


def check_query(
    values: Mapping[str, Any], modalities: Mapping[str, str], settings: Settings
) -> None:
    """Raise LimitExceededError for a search value over a limit; a value is keyed by a field
    (its modality applies) or by a modality name."""
    for name, value in values.items():
        why = problem(modalities.get(name, name), value, settings)
        if why:
            raise LimitExceededError("(query)", name, why)
