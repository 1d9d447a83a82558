"""The validated audio value the encoder receives: encoded bytes (or where to read them back
from), their digest, the header, and optionally the decoded samples kept since validation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmstore.plugin import MMStoreError
from mmstore_audio.decode import decode, to_mono

if TYPE_CHECKING:
    from mmstore.plugin import MediaStore


class AudioSourceError(MMStoreError, ValueError):
    """A stored audio source no longer gives the bytes that were ingested: the referenced
    file changed, moved or left the allowed roots."""

    http_status = 409


class AudioValue:
    """One validated clip.

    The encoded bytes are held (``data``), or read back on demand from the store's media
    (``media``) or from the referenced file (``path``, checked against ``digest``).
    ``load()`` decodes them to mono float32 (the mean of the channels); decoded samples
    kept since validation are used instead when present, and ``release()`` drops them.
    """

    __slots__ = (
        "_data",
        "_media",
        "_owned",
        "_samples",
        "channels",
        "digest",
        "format",
        "frames",
        "path",
        "sample_rate",
    )

    def __init__(
        self,
        *,
        digest: str,
        format: str,
        sample_rate: int,
        channels: int,
        frames: int,
        path: str | None = None,
        data: bytes | None = None,
        samples: np.ndarray | None = None,
        media: MediaStore | None = None,
        owned: bool = False,
    ) -> None:
        self.digest, self.format, self.path = digest, format, path
        self.sample_rate, self.channels, self.frames = sample_rate, channels, frames
        self._data, self._samples, self._media = data, samples, media
        #: whether ``_data`` is a copy made here (file bytes read, an array written as WAV)
        #: rather than the caller's own bytes
        self._owned = owned

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def __repr__(self) -> str:
        where = f" path={self.path!r}" if self.path else ""
        return (
            f"<AudioValue {self.format} {self.seconds:.2f}s {self.sample_rate} Hz "
            f"x{self.channels} {self.digest[:19]}{where}>"
        )

    def encoded(self) -> bytes:
        """The encoded file bytes, from memory, the media store or the referenced file."""
        if self._data is not None:
            return self._data
        if self._media is not None and self._media.exists(self.digest):
            return self._media.get(self.digest)
        if self.path is not None:
            return read_checked(Path(self.path), self.digest)
        raise AudioSourceError(f"audio {self.digest} has neither bytes, media nor a path to read")

    def load(self) -> tuple[np.ndarray, int]:
        """``(mono float32 samples, sample rate)``; the array is read-only."""
        samples = self._samples
        if samples is None:
            _, decoded = decode(self.encoded(), max_seconds=float("inf"))
            samples = to_mono(decoded)
        return samples, self.sample_rate

    def release(self) -> None:
        """Forget decoded samples kept since validation (``load()`` then decodes again)."""
        self._samples = None

    def stored_in(self, media: MediaStore) -> None:
        """The bytes are now in ``media``: copies made here are dropped and read back from
        there when needed (the caller's own bytes stay: dropping them frees nothing)."""
        self._media = media
        if self._owned:
            self._data = None


def read_checked(path: Path, digest: str) -> bytes:
    """The bytes of a referenced file, refused if they are not those ingested."""
    from mmstore.plugin import MediaStore

    try:
        data = path.read_bytes()
    except OSError as e:
        raise AudioSourceError(
            f"referenced audio file {str(path)!r} cannot be read ({e.strerror}); "
            "restore it, or ingest the record again (keep='copy' stores a copy)"
        ) from e
    if MediaStore.digest(data) != digest:
        raise AudioSourceError(
            f"referenced audio file {str(path)!r} changed since it was ingested "
            f"(its sha256 is no longer {digest.removeprefix('sha256:')}); ingest the record "
            "again to embed the new content, or restore the original file"
        )
    return data
