"""Checking one raw image value (a path, encoded bytes, a PIL image or a uint8 array) and
turning it into an :class:`ImageValue`; every refusal is a RecordError that says what to do."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mmstore.plugin import MediaStore, RecordError

from .value import FORMAT_NAMES, FORMATS, ImageValue, upright_size

#: modes that PNG stores losslessly; others are converted to RGB(A) first
PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})
ACCEPTED = "a path (str or pathlib.Path), encoded bytes, a PIL image or a uint8 numpy array"


@dataclass(frozen=True)
class Limits:
    """What one field accepts, from the modality's options (roots already resolved)."""

    roots: tuple[Path, ...]
    max_pixels: int
    max_bytes: int


class Check:
    """Checks values for one record and field; ``fail`` builds the RecordError."""

    def __init__(self, limits: Limits, record_id: object, field: str) -> None:
        self.limits, self.record_id, self.field = limits, record_id, field

    def fail(self, problem: str) -> RecordError:
        return RecordError(self.record_id, self.field, problem)

    def value(self, value: Any) -> ImageValue:
        if isinstance(value, str | Path):
            return self.path(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return self.encoded(bytes(value))
        if isinstance(value, Image.Image):
            return self.pil(value)
        if isinstance(value, np.ndarray):
            return self.array(value)
        raise self.fail(f"expected {ACCEPTED}, got {type(value).__name__}")

    # -- paths --------------------------------------------------------------------------
    def path(self, value: str | Path) -> ImageValue:
        path = self.resolve(value)
        try:
            size = path.stat().st_size
            self.size(size)
            data = path.read_bytes()
        except OSError as e:
            raise self.fail(f"cannot read {str(path)!r}: {e.strerror or e}") from e
        decoded = self.encoded(data)
        return ImageValue(
            decoded.digest, decoded.format, decoded.width, decoded.height, None, str(path)
        )

    def resolve(self, value: str | Path) -> Path:
        roots = self.limits.roots
        if not roots:
            raise self.fail(
                f"image paths are refused until the collection names the folders they may "
                f"come from: create it with options={{'image': {{'roots': ['/data/images']}}}} "
                f"(or pass the image as bytes, a PIL image or an array); got {str(value)!r}"
            )
        try:
            path = Path(value).expanduser().resolve(strict=True)
        except FileNotFoundError:
            raise self.fail(f"no file at {str(value)!r}; check the path") from None
        except (OSError, RuntimeError, ValueError) as e:  # a loop, a permission, a NUL byte
            raise self.fail(f"cannot resolve {str(value)!r}: {e}") from e
        if not any(path.is_relative_to(root) for root in roots):
            raise self.fail(
                f"{str(value)!r} resolves to {str(path)!r}, outside the allowed roots "
                f"{[str(r) for r in roots]}; move the file under a root or add its folder "
                "to options={'image': {'roots': [...]}}"
            )
        if not path.is_file():
            raise self.fail(f"{str(path)!r} is not a regular file")
        return path

    def size(self, n: int) -> None:
        if n == 0:
            raise self.fail("the image is empty (0 bytes); give a file with image data")
        if n > self.limits.max_bytes:
            raise self.fail(
                f"the image is {n:,} bytes, more than max_bytes={self.limits.max_bytes:,}; "
                "compress or downscale it, or raise options={'image': {'max_bytes': ...}}"
            )

    # -- encoded bytes ------------------------------------------------------------------
    def encoded(self, data: bytes) -> ImageValue:
        """Check the format and the header's pixel count, then decode fully once."""
        self.size(len(data))
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                self.pixels(*im.size)
                fmt = im.format or "unknown"
                im.load()
                width, height = upright_size(im)
        except RecordError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise self.fail(
                f"{e}; downscale the image, or raise options={{'image': {{'max_pixels': ...}}}}"
                " together with PIL.Image.MAX_IMAGE_PIXELS"
            ) from e
        except Image.UnidentifiedImageError as e:
            raise self.fail(
                f"not an image, or not a {FORMAT_NAMES} image (other formats, such as EPS, "
                "ICO or PCX, are not decoded); convert it to one of those first"
            ) from e
        except Exception as e:  # truncated or corrupt data: OSError, SyntaxError, EOFError...
            raise self.fail(
                f"the image data is truncated or corrupt ({type(e).__name__}: {e}); "
                "re-export or re-download it"
            ) from e
        return ImageValue(MediaStore.digest(data), fmt, width, height, data)

    def pixels(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise self.fail(
                f"the image is {width}x{height} = {width * height:,} pixels, more than "
                f"max_pixels={self.limits.max_pixels:,}; downscale it, or raise "
                "options={'image': {'max_pixels': ...}}"
            )
        if width * height == 0:
            raise self.fail(f"the image is {width}x{height}: it has no pixels")

    # -- pixels in memory ---------------------------------------------------------------
    def pil(self, im: Image.Image) -> ImageValue:
        self.pixels(*im.size)
        try:
            im = ImageOps.exif_transpose(im)
            if im.mode not in PNG_MODES:
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            return self.png(im)
        except Exception as e:  # a lazily opened image whose data turns out corrupt
            raise self.fail(f"cannot read the PIL image ({type(e).__name__}: {e})") from e

    def array(self, arr: np.ndarray) -> ImageValue:
        ok_shape = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))
        if arr.dtype != np.uint8 or not ok_shape:
            raise self.fail(
                f"an image array must be uint8 of shape (H, W), (H, W, 3) RGB or (H, W, 4) "
                f"RGBA; got {arr.dtype} of shape {arr.shape}. Convert it first, e.g. "
                "np.clip(a * 255, 0, 255).astype(np.uint8) for floats in [0, 1], or "
                "a.transpose(1, 2, 0) for channels first"
            )
        self.pixels(arr.shape[1], arr.shape[0])
        return self.png(Image.fromarray(np.ascontiguousarray(arr)))

    @staticmethod
    def png(im: Image.Image) -> ImageValue:
        """Pixels given in memory, kept as lossless PNG."""
        buf = io.BytesIO()
        im.save(buf, "PNG", compress_level=1)
        data = buf.getvalue()
        return ImageValue(MediaStore.digest(data), "PNG", im.width, im.height, data)
