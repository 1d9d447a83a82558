"""The ``logmel`` encoder: audio to pooled log-mel statistics (see
:mod:`mmstore_audio.features` for the design), with no model to load."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from mmstore.plugin import Encoder, EncoderParams, workers
from mmstore_audio._pool import pmap
from mmstore_audio.features import AMIN, peak_mel_power, pooled_logmel, resample, resampled_length
from mmstore_audio.value import AudioValue

#: a clip shorter than ``n_fft // MIN_WINDOW_SHARE`` samples once resampled is refused
#: (a quarter of a window: 100 samples, 6.25 ms, at the default 400 and 16 kHz)
MIN_WINDOW_SHARE = 4


class LogMelParams(EncoderParams):
    #: rate every clip is resampled to before the spectrogram, in Hz
    sample_rate: int = Field(16_000, ge=1_000, le=192_000)
    n_mels: int = Field(64, ge=1, le=512)
    #: window and FFT length, in samples at ``sample_rate`` (400 = 25 ms at 16 kHz)
    n_fft: int = Field(400, ge=16, le=65_536)
    #: step between windows, in samples (160 = 10 ms at 16 kHz)
    hop: int = Field(160, ge=1)
    fmin: float = Field(0.0, ge=0.0)
    #: highest mel frequency; None means sample_rate / 2
    fmax: float | None = Field(None, gt=0.0)
    batch_size: int = Field(64, ge=1, le=4096)
    #: computed with numpy on the CPU; "auto" and "cpu" are the same
    device: Literal["auto", "cpu"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> LogMelParams:
        if self.hop > self.n_fft:
            raise ValueError(f"hop ({self.hop}) longer than n_fft ({self.n_fft}) skips samples")
        nyquist = self.sample_rate / 2
        if self.fmax is not None and self.fmax > nyquist:
            raise ValueError(f"fmax ({self.fmax:g}) is above sample_rate / 2 ({nyquist:g})")
        if self.fmin >= (self.fmax or nyquist):
            raise ValueError(f"fmin ({self.fmin:g}) must be below fmax ({self.fmax or nyquist:g})")
        return self


class LogMel(Encoder):
    """Audio to ``4 * n_mels`` pooled log-mel statistics: per mel band, mean and standard
    deviation over time of the log-mel spectrogram and of its deltas."""

    name = "logmel"
    version = "1"
    modalities = ("audio",)
    Params = LogMelParams
    params: LogMelParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.batch_size = self.params.batch_size

    @property
    def dim(self) -> int:
        return 4 * self.params.n_mels

    @property
    def fmax(self) -> float:
        return self.params.fmax if self.params.fmax is not None else self.params.sample_rate / 2

    def check(self, item: Any) -> None:
        """Only validated audio values that give a spectrum. A clip shorter than one window
        is zero-padded, but one shorter than a quarter of a window (``MIN_WINDOW_SHARE``)
        once resampled is refused, and so is one whose single window holds no power above
        -100 dB (``features.AMIN``; its sound sits on the window's zero-weight first sample,
        or is that quiet): both would give a vector of zeros."""
        if not isinstance(item, AudioValue):
            raise ValueError(f"expected a validated audio value, got {type(item).__name__}")
        p = self.params
        n = resampled_length(item.frames, item.sample_rate, p.sample_rate)
        least = -(-p.n_fft // MIN_WINDOW_SHARE)
        if n < least:
            raise ValueError(
                f"the clip is too short to give a spectrum: {item.frames} samples at "
                f"{item.sample_rate} Hz ({1000 * item.seconds:.3g} ms), {n} at the encoder's "
                f"{p.sample_rate} Hz, fewer than {least} (a quarter of its {p.n_fft}-sample "
                f"window, {1000 * least / p.sample_rate:.3g} ms); give a longer clip"
            )
        if n <= p.n_fft and self._peak_power(item) <= AMIN:
            raise ValueError(
                f"the clip holds no power above -100 dB in its one {p.n_fft}-sample window "
                "(its sound sits on the window's zero-weight first sample, or is that quiet); "
                "give a longer or louder clip"
            )

    def _peak_power(self, item: AudioValue) -> float:
        p = self.params
        samples, rate = item.load()
        clip = resample(samples, rate, p.sample_rate)
        return peak_mel_power(clip, p.sample_rate, p.n_mels, p.n_fft, p.hop, p.fmin, self.fmax)

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        """Loads, resamples and pools the batch in parts, one per thread of the pool; each
        part goes through one FFT and one mel projection."""
        for item in items:
            self.check(item)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        size = -(-len(items) // (2 * workers()))
        parts = [list(items[i : i + size]) for i in range(0, len(items), size)]
        return np.concatenate(pmap(self._part, parts))

    def _part(self, items: list[AudioValue]) -> np.ndarray:
        p = self.params
        clips = [self._clip(item) for item in items]
        return pooled_logmel(clips, p.sample_rate, p.n_mels, p.n_fft, p.hop, p.fmin, self.fmax)

    def _clip(self, item: AudioValue) -> np.ndarray:
        """Mono samples at the encoder's rate; samples kept since validation are dropped."""
        samples, rate = item.load()
        item.release()
        return resample(samples, rate, self.params.sample_rate)
