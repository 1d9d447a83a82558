"""Image values: the checked, encoded bytes of one image (or where to read them) and its
digest, decoded only when an encoder asks, upright and in RGB."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import ExifTags, Image, ImageOps

from mmstore.plugin import MEDIA_PREFIX as PREFIX
from mmstore.plugin import MediaStore, MMStoreError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: the only Pillow decoders run on image bytes: ``Image.open(..., formats=FORMATS)`` never
#: tries another (EPS would run Ghostscript; exotic decoders widen what a file can reach)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: the same, as messages name them
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
#: EXIF orientations that swap width and height when applied
TRANSPOSED = frozenset({5, 6, 7, 8})
READ_BLOCK = 1 << 20


class ReferenceChangedError(MMStoreError, RuntimeError):
    """A referenced image file no longer holds the bytes it held when it was ingested."""

    http_status = 409


@dataclass(frozen=True, eq=False)
class ImageValue:
    """One validated image. Holds the encoded bytes (PNG for pixels given in memory), or the
    path or media digest to read them from; never decoded pixels."""

    digest: str
    format: str
    width: int
    height: int
    data: bytes | None = None
    #: the resolved path the image was read from (checked against ``digest`` on reading)
    path: str | None = None
    media: MediaStore | None = None

    def __repr__(self) -> str:
        where = f", path={self.path!r}" if self.path else ""
        return f"ImageValue({self.digest[:19]}, {self.format} {self.width}x{self.height}{where})"

    def read(self) -> bytes:
        """The encoded bytes, checked against the digest when read from a file or the store."""
        if self.data is not None:
            return self.data
        if self.path is not None:
            return read_checked(Path(self.path), self.digest)
        if self.media is not None:
            return self.media.get(self.digest)
        raise MMStoreError(f"image {self.digest} has no bytes, path or media store")

    def load(self) -> Image.Image:
        """The decoded image, EXIF orientation applied, in RGB."""
        return decode_rgb(self.read())


def decode_rgb(data: bytes) -> Image.Image:
    """Decode encoded bytes (held in memory, so nothing needs closing) to upright RGB; only
    the ``FORMATS`` decoders are tried (another format raises UnidentifiedImageError)."""
    im: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
    im.load()
    if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        im = ImageOps.exif_transpose(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def upright_size(im: Image.Image) -> tuple[int, int]:
    """Width and height as shown, after the EXIF orientation."""
    w, h = im.size
    return (h, w) if im.getexif().get(ExifTags.Base.Orientation, 1) in TRANSPOSED else (w, h)


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in _blocks(f):
            h.update(block)
    return PREFIX + h.hexdigest()


def read_checked(path: Path, digest: str) -> bytes:
    """A referenced file's bytes; refuse them if they are not the ones ingested."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"image file {str(path)!r} is gone; restore it, or ingest the record again "
            "(with keep='copy' the store keeps its own copy)"
        ) from None
    if MediaStore.digest(data) != digest:
        raise changed(path, digest)
    return data


def changed(path: Path, digest: str) -> ReferenceChangedError:
    return ReferenceChangedError(
        f"image file {str(path)!r} changed since it was ingested (expected {digest}); "
        "ingest the record again to use the new image, or restore the original file"
    )


def _blocks(f: io.BufferedReader) -> Iterator[bytes]:
    while block := f.read(READ_BLOCK):
        yield block
