"""Built-in plugin: the ``audio`` modality and the ``logmel`` encoder.

``audio`` takes WAV, FLAC or OGG bytes, a path under ``options={"audio": {"roots": [...]}}``,
or ``(array, sample_rate)``; see :class:`mmstore_audio.modality.Audio` for what is refused
and :class:`~mmstore_audio.modality.AudioOptions` for the options. ``logmel`` turns a clip
into pooled log-mel statistics (``4 * n_mels`` numbers, no model); the design and what
cosine similarity then measures are in :mod:`mmstore_audio.features`.
"""

from __future__ import annotations

from mmstore.plugin import Encoder, Modality, hookimpl
from mmstore_audio.encoder import LogMel, LogMelParams
from mmstore_audio.modality import Audio, AudioOptions
from mmstore_audio.value import AudioSourceError, AudioValue

__all__ = [
    "Audio",
    "AudioOptions",
    "AudioSourceError",
    "AudioValue",
    "LogMel",
    "LogMelParams",
]


@hookimpl
def mmstore_register_modalities() -> list[type[Modality]]:
    return [Audio]


@hookimpl
def mmstore_register_encoders() -> list[type[Encoder]]:
    return [LogMel]
