"""The ``audio`` modality: WAV/FLAC/OGG bytes, files under configured roots, or sample
arrays, checked (header first, then every sample) and kept in the store's media folder or
referenced where they lie."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mmstore.plugin import MEDIA_PREFIX as PREFIX
from mmstore.plugin import (
    ConfigError,
    MediaStore,
    Modality,
    ModalityOptions,
    NotFoundError,
    RecordError,
)
from mmstore_audio._pool import pmap
from mmstore_audio.decode import (
    MIB,
    AudioProblem,
    array_rate,
    array_samples,
    check_content,
    decode,
    encode_wav,
    split_array,
    to_mono,
)
from mmstore_audio.value import AudioSourceError, AudioValue, read_checked

ROOTS_HINT = "options={'audio': {'roots': ['/path/to/audio']}}"


class AudioOptions(ModalityOptions):
    #: directories whose files may be ingested by path (symlinks resolved before the
    #: check); none means paths are refused
    roots: list[str] = []
    #: longest clip accepted, checked on the header before decoding
    max_seconds: float = Field(600.0, gt=0)
    #: largest encoded file (or array written as WAV) accepted
    max_bytes: int = Field(256 * MIB, ge=1)
    #: most memory one clip may decode to (frames x channels x 4 bytes of float32, in MiB),
    #: checked on the header before decoding; 1 GiB holds 600 s of 8 channels at 48 kHz
    max_decoded_mb: int = Field(1024, ge=1)
    #: "copy" stores the bytes in the store's media folder; "reference" stores a file's
    #: path and sha256 instead (bytes and arrays, having no path, are always copied)
    keep: Literal["copy", "reference"] = "copy"
    #: decoded samples (then file bytes) kept per validated batch between validation and
    #: encoding, so that a clip is decoded once; past it, clips are decoded again to encode
    cache_mb: int = Field(512, ge=0)


class _Budget:
    """Bytes that one validated batch may keep in memory (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.left, self.lock = limit, threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            if n > self.left:
                return False
            self.left -= n
            return True


class Audio(Modality):
    """Audio clips: WAV, FLAC or OGG bytes; a path (``str`` or ``os.PathLike``) to such a
    file under ``roots``; or ``(array, sample_rate)`` / ``{"array": ..., "sample_rate":
    ...}`` with a ``(frames,)`` or ``(frames, channels)`` float or int array and an int rate.

    Refused, with a RecordError naming the record and field: another format, empty or
    random bytes, a file truncated (fewer frames decoded than the header promises, a WAV
    data chunk cut short, a decoder error), longer than ``max_seconds`` (seen in the header,
    before decoding) or larger than ``max_bytes``, a file with more than
    ``decode.MAX_CHANNELS`` channels or whose samples would decode to more than
    ``max_decoded_mb`` (both seen in the header, before decoding), NaN or infinite samples,
    silence (a mono peak under ``decode.SILENCE_PEAK``, -80 dBFS), a rate that is not an int
    of 1,000-384,000 Hz, a path with no roots configured or resolving outside them, and a
    value whose reading fails in any other way (the error is named in the RecordError).
    """

    name = "audio"
    inline = False
    suffixes = (".wav", ".flac", ".ogg", ".oga")
    Options = AudioOptions
    options: AudioOptions

    def __init__(self, *, media: MediaStore | None = None, **options: Any) -> None:
        super().__init__(media=media, **options)
        self._roots = tuple(Path(r).expanduser().resolve() for r in self.options.roots)

    # -- validation ---------------------------------------------------------------------
    def validate(self, value: Any, record_id: object, field: str) -> AudioValue:
        return self._validate(value, record_id, field, _Budget(self.options.cache_mb * MIB))

    def validate_batch(self, values: list[Any], record_ids: list[str], field: str) -> list[Any]:
        """Each value is read and decoded in a thread pool; decoded samples are kept, up to
        ``cache_mb`` for the batch, for the encoder."""
        budget = _Budget(self.options.cache_mb * MIB)

        def one(pair: tuple[Any, str]) -> AudioValue | RecordError:
            try:
                return self._validate(pair[0], pair[1], field, budget)
            except RecordError as e:
                return e

        return pmap(one, list(zip(values, record_ids, strict=True)))

    def _validate(self, value: Any, record_id: object, field: str, budget: _Budget) -> AudioValue:
        try:
            if isinstance(value, AudioValue):
                return value
            if isinstance(value, bytes | bytearray | memoryview):
                return self._from_bytes(bytes(value), budget)
            if isinstance(value, str | os.PathLike):
                return self._from_path(value, budget)
            if isinstance(value, tuple | dict):
                return self._from_array(value, budget)
        except AudioProblem as e:
            raise RecordError(record_id, field, str(e)) from e
        except Exception as e:  # a decoder, numpy or a caller's array-like failing otherwise
            raise RecordError(
                record_id,
                field,
                f"cannot be read as audio ({type(e).__name__}: {e}); check the value, or "
                "convert it to a WAV, FLAC or OGG file or a float32 array first",
            ) from e
        raise RecordError(
            record_id,
            field,
            f"expected WAV/FLAC/OGG bytes, a file path or (array, sample_rate), "
            f"got {type(value).__name__}",
        )

    def _from_bytes(
        self, data: bytes, budget: _Budget, path: str | None = None, owned: bool = False
    ) -> AudioValue:
        if len(data) > self.options.max_bytes:
            raise AudioProblem(
                f"{len(data):,} bytes, more than max_bytes={self.options.max_bytes:,}"
            )
        header, samples = decode(data, self.options.max_seconds, self.options.max_decoded_mb * MIB)
        mono = to_mono(samples)
        del samples
        check_content(mono)
        keep_samples = budget.take(mono.nbytes)
        keep_data = not owned or budget.take(len(data))
        return AudioValue(
            digest=MediaStore.digest(data),
            format=header.format,
            sample_rate=header.sample_rate,
            channels=header.channels,
            frames=header.frames,
            path=path,
            data=data if keep_data else None,
            samples=mono if keep_samples else None,
            owned=owned,
        )

    def _from_path(self, value: str | os.PathLike[str], budget: _Budget) -> AudioValue:
        path = self._resolve(value)
        try:
            size = path.stat().st_size
            if size > self.options.max_bytes:
                raise AudioProblem(
                    f"file {str(path)!r} has {size:,} bytes, more than "
                    f"max_bytes={self.options.max_bytes:,}"
                )
            data = path.read_bytes()
        except OSError as e:
            raise AudioProblem(f"cannot read {str(path)!r}: {e.strerror}") from e
        if not data:
            raise AudioProblem(f"file {str(path)!r} is empty")
        return self._from_bytes(data, budget, path=str(path), owned=True)

    def _from_array(self, value: tuple[Any, ...] | dict[str, Any], budget: _Budget) -> AudioValue:
        array, rate = split_array(value)
        rate = array_rate(rate)
        arr = array_samples(array, self.options.max_seconds * rate)
        return self._from_bytes(encode_wav(arr, rate), budget, owned=True)

    def _resolve(self, value: str | os.PathLike[str]) -> Path:
        """The real path of a file under one of the roots (symlinks followed first)."""
        raw = os.fspath(value)
        if not self._roots:
            raise AudioProblem(
                f"audio file paths are refused ({raw!r}): no roots are configured; allow "
                f"the directories that hold your files with {ROOTS_HINT}"
            )
        try:
            path = Path(raw).expanduser().resolve(strict=True)
        except FileNotFoundError:
            raise AudioProblem(f"no such file: {raw!r}") from None
        except (OSError, RuntimeError) as e:
            raise AudioProblem(f"cannot resolve {raw!r}: {e}") from e
        if not self._allowed(path):
            raise AudioProblem(
                f"{raw!r} resolves to {str(path)!r}, outside the allowed roots "
                f"{[str(r) for r in self._roots]} (symlinks are followed before the check); "
                f"move the file under a root or add its directory to {ROOTS_HINT}"
            )
        if not path.is_file():
            raise AudioProblem(f"{str(path)!r} is not a regular file")
        return path

    def _allowed(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self._roots)

    # -- storage ------------------------------------------------------------------------
    def to_source(self, value: Any) -> dict[str, Any]:
        """``{"media": digest, ...}`` (bytes copied into the media folder), or with
        ``keep="reference"`` and a path ``{"path": ..., "sha256": hex, ...}``; both with
        format, sample_rate, channels, frames and seconds."""
        info = {
            "format": value.format,
            "sample_rate": value.sample_rate,
            "channels": value.channels,
            "frames": value.frames,
            "seconds": round(value.seconds, 6),
        }
        if self.options.keep == "reference" and value.path is not None:
            return {"path": value.path, "sha256": value.digest.removeprefix(PREFIX), **info}
        media = self._media()
        if not media.exists(value.digest):
            media.put(value.encoded(), value.digest)
        value.stored_in(media)
        return {"media": value.digest, **info}

    def from_source(self, source: Any) -> AudioValue:
        """The value again, its bytes read lazily; a referenced file is checked now and
        refused with AudioSourceError if it changed, vanished or left the roots."""
        try:
            header = {k: source[k] for k in ("format", "sample_rate", "channels", "frames")}
            if "media" in source:
                return self._from_media(source["media"], header)
            path, digest = Path(source["path"]), PREFIX + source["sha256"]
        except (KeyError, TypeError) as e:
            raise AudioSourceError(f"not an audio source: {source!r}") from e
        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError) as e:  # a loop, a NUL byte
            raise AudioSourceError(f"referenced audio file {str(path)!r}: {e}") from e
        if not self._allowed(real):
            raise AudioSourceError(
                f"referenced audio file {str(path)!r} is not under the roots "
                f"{[str(r) for r in self._roots]} any more; add its directory to {ROOTS_HINT}"
            )
        read_checked(real, digest)
        return AudioValue(digest=digest, path=str(real), **header)

    def _from_media(self, digest: str, header: dict[str, Any]) -> AudioValue:
        media = self._media()
        if not media.exists(digest):
            raise NotFoundError(
                f"media {digest} is missing from {media.folder}; restore the store's media "
                "folder from a backup, or ingest the record again from its original"
            )
        return AudioValue(digest=digest, media=media, **header)

    def _media(self) -> MediaStore:
        if self.media is None:
            raise ConfigError(
                "modality 'audio' keeps copies in the store's media folder: none given"
            )
        return self.media

    def fingerprint(self, value: Any) -> str:
        return value.digest
