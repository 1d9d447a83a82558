"""Reading audio with soundfile (libsndfile): the header checks done before decoding,
truncation and content checks after it, the mono downmix, and arrays written as WAV."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

#: container formats accepted (as libsndfile names them)
FORMATS = ("WAV", "WAVEX", "FLAC", "OGG")
#: a clip whose mono peak stays below this (-80 dBFS) is refused as silent
SILENCE_PEAK = 1e-4
#: sample rates accepted, in Hz
MIN_RATE, MAX_RATE = 1_000, 384_000
#: channels accepted; more usually means a (channels, frames) array passed the wrong way
MAX_CHANNELS = 32
#: bytes in a MiB (options give memory in MiB)
MIB = 1 << 20
#: WAV subtype each array dtype is stored as: every one of them exactly (lossless)
WAV_SUBTYPES = {
    "float16": "FLOAT",
    "float32": "FLOAT",
    "float64": "FLOAT",
    "int8": "PCM_16",
    "int16": "PCM_16",
    "int32": "PCM_32",
    "uint8": "PCM_U8",  # offset binary (128 is zero), written from int16
}


class AudioProblem(ValueError):
    """Why a value is not usable audio; the modality turns it into a RecordError."""


@dataclass(frozen=True)
class Header:
    """What a file's header says, read before any sample is decoded."""

    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def check_rate(rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioProblem(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")


def check_header(header: Header, max_seconds: float, max_decoded: float = math.inf) -> None:
    """Refuse by the header alone: format, rate, channels, length, and the bytes decoding
    would allocate (``decoded_bytes``) against ``max_decoded``."""
    if header.format not in FORMATS:
        raise AudioProblem(f"{header.format} files are not accepted; convert to WAV, FLAC or OGG")
    check_rate(header.sample_rate)
    if header.channels > MAX_CHANNELS:
        raise AudioProblem(
            f"the file has {header.channels} channels, more than {MAX_CHANNELS}; "
            "downmix it or keep the channels you need"
        )
    if header.frames == 0:
        raise AudioProblem("the file holds no samples")
    if header.seconds > max_seconds:
        raise AudioProblem(
            f"audio lasts {header.seconds:.1f} s, more than max_seconds={max_seconds:g}; "
            "cut it into shorter clips or raise options={'audio': {'max_seconds': ...}}"
        )
    if decoded_bytes(header) > max_decoded:
        raise AudioProblem(
            f"decoding would take {decoded_bytes(header):,} bytes ({header.frames:,} frames x "
            f"{header.channels} channels x 4), more than max_decoded_mb={max_decoded / MIB:g}; "
            "cut the clip, downmix it, or raise options={'audio': {'max_decoded_mb': ...}}"
        )


def decoded_bytes(header: Header) -> int:
    """Memory the decoded samples take: frames x channels float32."""
    return header.frames * header.channels * 4


def wav_shortfall(data: bytes) -> tuple[int, int] | None:
    """``(declared, present)`` bytes of a RIFF/WAVE ``data`` chunk cut short, else None.

    libsndfile quietly shortens the frame count of a truncated WAV to what is present,
    so the header alone does not show it; the chunk's declared size does. A size of 0 or
    0xFFFFFFFF (written by streaming recorders that could not seek back) is not checked.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"data":
            present = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and size > present:
                return size, present
            return None
        pos += 8 + size + (size & 1)
    return None


def decode(
    data: bytes, max_seconds: float, max_decoded: float = math.inf
) -> tuple[Header, np.ndarray]:
    """The header (checked before decoding, see :func:`check_header`) and all samples,
    ``(frames, channels)`` float32."""
    if not data:
        raise AudioProblem("the bytes are empty")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioProblem(f"not readable as WAV, FLAC or OGG audio ({_reason(e)})") from e
    with f:
        header = Header(f.format, f.subtype, f.samplerate, f.channels, f.frames)
        check_header(header, max_seconds, max_decoded)
        try:
            samples = f.read(dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as e:
            raise AudioProblem(
                f"truncated or damaged: the header promises {header.frames} frames, "
                f"decoding failed ({_reason(e)})"
            ) from e
    if len(samples) < header.frames:
        raise AudioProblem(
            f"truncated: the header promises {header.frames} frames, "
            f"only {len(samples)} could be decoded"
        )
    short = wav_shortfall(data) if header.format in ("WAV", "WAVEX") else None
    if short is not None:
        raise AudioProblem(
            f"truncated: the WAV data chunk declares {short[0]} bytes, only {short[1]} are present"
        )
    return header, samples


def _reason(e: BaseException) -> str:
    """libsndfile's words, without the ``Error opening <BytesIO ...>:`` prefix."""
    text = str(e).strip()
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Mean over channels, as a read-only 1-d float32 array."""
    if samples.shape[1] == 1:
        mono = np.ascontiguousarray(samples.reshape(-1))  # a view when contiguous
    else:
        mono = samples.mean(axis=1, dtype=np.float32)
    mono.flags.writeable = False
    return mono


def check_content(mono: np.ndarray) -> None:
    """Refuse NaN or infinite samples and silence (see ``SILENCE_PEAK``)."""
    peak = max(float(mono.max()), -float(mono.min()))
    if not np.isfinite(peak):
        raise AudioProblem("audio holds NaN or infinite samples")
    if peak < SILENCE_PEAK:
        raise AudioProblem(
            f"audio is silent (peak {peak:.1e} below {SILENCE_PEAK:g}, i.e. -80 dBFS); "
            "silence has no spectrum to embed: leave the field out instead"
        )


def split_array(value: Any) -> tuple[Any, Any]:
    """``(array, sample_rate)`` from a 2-tuple or a ``{"array", "sample_rate"}`` dict."""
    if isinstance(value, dict):
        if set(value) != {"array", "sample_rate"}:
            raise AudioProblem(
                f"an audio dict has the keys 'array' and 'sample_rate', got {sorted(value)}"
            )
        return value["array"], value["sample_rate"]
    if len(value) != 2:
        raise AudioProblem(f"an audio tuple is (array, sample_rate), got {len(value)} items")
    return value[0], value[1]


def array_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise AudioProblem(
            f"sample rate must be an int (Hz), got {type(rate).__name__} {rate!r}; "
            "pass int(sample_rate)"
        )
    check_rate(int(rate))
    return int(rate)


def array_samples(array: Any, max_frames: float) -> np.ndarray:
    """A checked ``(frames, channels)`` array of one of the ``WAV_SUBTYPES`` dtypes."""
    try:
        arr = np.asarray(array)
    except (TypeError, ValueError) as e:
        raise AudioProblem(f"samples are not a numeric array: {e}") from e
    if arr.dtype.name not in WAV_SUBTYPES:
        raise AudioProblem(
            f"samples of dtype {arr.dtype} are not accepted; use float32, int16, int32 or uint8"
        )
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] > MAX_CHANNELS:
        raise AudioProblem(
            f"samples of shape {arr.shape}: expected (frames,) or (frames, channels) with at "
            f"most {MAX_CHANNELS} channels (transpose a (channels, frames) array)"
        )
    if arr.shape[0] == 0:
        raise AudioProblem("the array holds no samples")
    if arr.shape[0] > max_frames:
        raise AudioProblem(f"audio has {arr.shape[0]} frames, more than max_seconds allows")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise AudioProblem("audio holds NaN or infinite samples")
    return arr


def encode_wav(arr: np.ndarray, rate: int) -> bytes:
    """``arr`` as WAV bytes, exactly (``WAV_SUBTYPES``): soundfile writes only float and
    16/32-bit ints, so int8 is scaled into 16 bits, and uint8 is centred (128 is zero) and
    scaled into 16 bits that 8-bit unsigned WAV keeps exactly."""
    subtype = WAV_SUBTYPES[arr.dtype.name]
    if arr.dtype == np.int8:
        arr = arr.astype(np.int16) * 256
    elif arr.dtype == np.uint8:
        arr = (arr.astype(np.int16) - 128) * 256
    elif arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, arr, rate, format="WAV", subtype=subtype)
    return _without_peak_time(buf.getvalue())


def _without_peak_time(wav: bytes) -> bytes:
    """Zero the write time that libsndfile puts in a float WAV's PEAK chunk, so that the
    same samples always give the same bytes (and the same content digest)."""
    at = wav.find(b"PEAK", 12)
    if at < 0:
        return wav
    stamp = at + 12  # "PEAK", chunk size, version, then the 4-byte timestamp
    return wav[:stamp] + b"\0\0\0\0" + wav[stamp + 4 :]
