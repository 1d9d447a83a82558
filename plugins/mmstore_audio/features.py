"""Log-mel features pooled into one fixed-size vector per clip (numpy and scipy only).

The steps, for a batch of mono float32 clips already at the encoder's rate:

1. **Frames**: Hann-windowed (periodic) frames of ``n_fft`` samples every ``hop`` samples,
   not centred, no padding: a clip of ``n`` samples gives ``1 + (n - n_fft) // hop``
   frames. A clip shorter than one window is zero-padded to one window (one frame; its
   time statistics below are then zero). The encoder refuses a clip shorter than a
   quarter of a window, or one whose single window holds no power above ``AMIN``: either
   would give a vector of zeros (see :meth:`mmstore_audio.encoder.LogMel.check`).
2. **Power spectrum** of each frame (``scipy.fft.rfft``), projected on a mel filterbank
   (:func:`mel_filterbank`: the HTK mel scale ``2595 log10(1 + f/700)``, triangles evaluated
   at the FFT bin frequencies, each normalized to unit area as Slaney's filters are).
3. **Log**: ``10 log10(max(mel, 1e-10))`` in dB, then floored at the clip's loudest value
   minus ``TOP_DB`` (80 dB), so that near-silent bands and the gain of the clip do not
   decide the result.
4. **Deltas**: ``(L[t+1] - L[t-1]) / 2`` per band, the edges of each clip repeated.
5. **Pooling** over time, per mel band: mean and standard deviation of the log-mel, and
   mean and standard deviation of the deltas: four blocks of ``n_mels``, ``dim = 4 n_mels``.

Why pooled statistics: a clip of any length maps to one vector without a learned model,
and the vector describes *what the clip sounds like on average* (its spectral envelope:
pitch region, timbre, noisiness) and *how much and how fast each band moves* (steady tone
vs. speech-like modulation vs. noise). It ignores the order of events: two clips with the
same sounds in another order are close. That suits retrieval of similar-sounding clips,
not of aligned sequences.

Standardization, so that cosine similarity is not dominated by the overall level: the mean
block is centred over the bands within each clip (subtracting the clip's mean log-mel,
which removes the gain: a clip played 20 dB louder gives the same block), and every block
is divided by a fixed scale, ``BLOCK_SCALES``: 10 dB for the band means and both standard
deviations, 1 dB for the delta means (they are small: a clip's drift per frame). The
standard deviations stay uncentred (zero means "steady", which is meaningful); as the log
makes them independent of a band's level, a noise floor 30 dB down still counts as
"fluctuating", and the 10 dB scale keeps the spectral shape the larger part of a vector.
A flat spectrum (white noise) has a near-zero mean block; its direction then comes from
its deviations. Nothing is fitted to data, so a vector depends only on its clip and the
parameters.

Cosine similarity of two vectors then measures how alike the two clips' spectral shapes
are, plus how alike their per-band dynamics are, independent of loudness and duration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from math import gcd

import numpy as np

#: dynamic range kept below a clip's loudest log-mel value, in dB
TOP_DB = 80.0
#: smallest mel power taken before the log (-100 dB)
AMIN = 1e-10
#: fixed divisors of the four blocks (band means, band stds, delta means, delta stds), in dB
BLOCK_SCALES = (10.0, 10.0, 1.0, 10.0)
#: frames transformed at once (bounds memory: frames x n_fft float32)
MAX_FRAMES = 1 << 15


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """The HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` float32 weights: triangles equally spaced on the HTK mel
    scale between ``fmin`` and ``fmax``, each of unit area (Slaney normalization)."""
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    out = np.ascontiguousarray(weights.T, np.float32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    """Periodic Hann window of ``n`` samples."""
    out = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)
    out.flags.writeable = False
    return out


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` (1-d float32) from ``rate`` to ``target`` Hz, polyphase with the rational ratio
    ``target / rate`` reduced by their gcd (scipy's Kaiser-windowed filter)."""
    if rate == target:
        return np.asarray(x, np.float32)
    g = gcd(rate, target)
    from scipy.signal import resample_poly  # imported on use: 0.5 s, not at store open

    return np.asarray(resample_poly(x, target // g, rate // g), np.float32)


def resampled_length(n: int, rate: int, target: int) -> int:
    """Samples :func:`resample` gives for ``n`` samples: ``ceil(n * target / rate)``."""
    return -(-n * target // rate)


def frame_count(n: int, n_fft: int, hop: int) -> int:
    """Frames of a clip of ``n`` samples (at least one: short clips are padded)."""
    return 1 + max(0, n - n_fft) // hop


def _frames(clip: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    if len(clip) < n_fft:
        clip = np.pad(clip, (0, n_fft - len(clip)))
    return np.lib.stride_tricks.sliding_window_view(clip, n_fft)[::hop]


def _frame_blocks(clips: Sequence[np.ndarray], n_fft: int, hop: int) -> Iterator[np.ndarray]:
    """All frames of all clips, in order, as blocks of at most ``MAX_FRAMES`` rows (each
    block a new array)."""
    pending: list[np.ndarray] = []
    size = 0
    for clip in clips:
        view = _frames(clip, n_fft, hop)
        for start in range(0, len(view), MAX_FRAMES):
            part = view[start : start + MAX_FRAMES]
            if size + len(part) > MAX_FRAMES and pending:
                yield np.concatenate(pending)
                pending, size = [], 0
            pending.append(part)
            size += len(part)
    if pending:
        yield np.concatenate(pending)


def mel_power(
    clips: Sequence[np.ndarray], sample_rate: int, n_fft: int, hop: int, bank: np.ndarray
) -> np.ndarray:
    """Mel power of every frame of every clip, concatenated: ``(total_frames, n_mels)``."""
    import scipy.fft as scipy_fft  # imported on use, not at store open

    window = hann(n_fft)
    parts = []
    for block in _frame_blocks(clips, n_fft, hop):
        block *= window  # a copy of the frames, so in place
        spec = scipy_fft.rfft(block, axis=1)
        power = spec.real**2 + spec.imag**2
        parts.append(power.astype(np.float32, copy=False) @ bank)
    return np.concatenate(parts)


def peak_mel_power(
    clip: np.ndarray, sample_rate: int, n_mels: int, n_fft: int, hop: int, fmin: float, fmax: float
) -> float:
    """The highest mel power of any frame of one clip (``AMIN`` or less: no spectrum)."""
    bank = mel_filterbank(sample_rate, n_fft, n_mels, float(fmin), float(fmax))
    return float(mel_power([clip], sample_rate, n_fft, hop, bank).max())


def pooled_logmel(
    clips: Sequence[np.ndarray],
    sample_rate: int,
    n_mels: int,
    n_fft: int,
    hop: int,
    fmin: float,
    fmax: float,
) -> np.ndarray:
    """The ``(len(clips), 4 * n_mels)`` float32 embeddings of mono clips at ``sample_rate``
    (see the module docstring); the whole batch goes through one FFT and one projection."""
    if not len(clips):
        return np.zeros((0, 4 * n_mels), np.float32)
    bank = mel_filterbank(sample_rate, n_fft, n_mels, float(fmin), float(fmax))
    counts = np.array([frame_count(len(c), n_fft, hop) for c in clips])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    logmel = 10.0 * np.log10(np.maximum(mel_power(clips, sample_rate, n_fft, hop, bank), AMIN))
    peak = np.maximum.reduceat(logmel.max(axis=1), starts)
    logmel = np.maximum(logmel, np.repeat(peak - TOP_DB, counts)[:, None])
    deltas = _deltas(logmel, starts, counts)
    mean, std = _pool(logmel, starts, counts)
    dmean, dstd = _pool(deltas, starts, counts)
    mean -= mean.mean(axis=1, keepdims=True)
    blocks = [b / s for b, s in zip((mean, std, dmean, dstd), BLOCK_SCALES, strict=True)]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), np.float32)


def _deltas(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(x[t+1] - x[t-1]) / 2`` within each clip, edges repeated."""
    index = np.arange(len(x))
    first = np.repeat(starts, counts)
    last = first + np.repeat(counts, counts) - 1
    return (x[np.minimum(index + 1, last)] - x[np.maximum(index - 1, first)]) / 2.0


def _pool(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-clip mean and standard deviation over frames (float64 sums)."""
    n = counts[:, None].astype(np.float64)
    mean = np.add.reduceat(x, starts, axis=0, dtype=np.float64) / n
    centred = x - np.repeat(mean, counts, axis=0)
    var = np.add.reduceat(centred * centred, starts, axis=0, dtype=np.float64) / n
    return mean, np.sqrt(var)
