"""Built-in plugin: the ``image`` modality.

Accepts a path under one of the collection's ``roots``, encoded bytes, a PIL image or a
uint8 array. Each value is checked (pixel count from the header before decoding, then one
full decode) and becomes an :class:`ImageValue` holding encoded bytes, never pixels. The
store keeps a content-addressed copy (``keep="copy"``), or only the path and digest of a
file (``keep="reference"``)::

    store.create_collection(
        "photos",
        encoders={"image": {"encoder": "open_clip", "model": "ViT-B-32", "pretrained": path}},
        options={"image": {"roots": ["/data/photos"], "keep": "reference"}},
    )
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import Field, field_validator

from mmstore.plugin import (
    ConfigError,
    MediaStore,
    Modality,
    ModalityOptions,
    NotFoundError,
    RecordError,
    hookimpl,
    shared_pool,
)

from .checks import Check, Limits
from .value import ImageValue, ReferenceChangedError, changed, file_digest

__all__ = ["ImageModality", "ImageOptions", "ImageValue", "ReferenceChangedError"]


def _pillow_limit() -> int:
    return Image.MAX_IMAGE_PIXELS or 2**31 - 1


class ImageOptions(ModalityOptions):
    """``options={"image": {...}}`` of a collection, or a field's ``modality_options``."""

    #: folders that image paths may come from (after resolving symlinks); none: no paths
    roots: list[str] = []
    #: most pixels (width x height) accepted, checked from the header before decoding
    max_pixels: int = Field(default_factory=_pillow_limit, ge=1)
    #: largest encoded image accepted, in bytes
    max_bytes: int = Field(64 * 2**20, ge=1)
    #: ``copy``: keep the bytes in the store's media folder; ``reference``: keep the path
    #: and digest of a file given by path (other inputs are always copied)
    keep: Literal["copy", "reference"] = "copy"

    @field_validator("max_pixels")
    @classmethod
    def _within_pillow(cls, value: int) -> int:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and value > limit:
            raise ValueError(
                f"max_pixels={value:,} is above Pillow's limit PIL.Image.MAX_IMAGE_PIXELS="
                f"{limit:,}; raise that first if such images are expected"
            )
        return value


class ImageModality(Modality):
    """Images, validated in parallel threads and kept content-addressed or by reference."""

    name = "image"
    inline = False
    suffixes = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
    Options = ImageOptions
    options: ImageOptions

    def __init__(self, *, media: MediaStore | None = None, **options: Any) -> None:
        super().__init__(media=media, **options)
        self._limits: Limits | None = None

    @property
    def limits(self) -> Limits:
        """Options with the roots resolved (once: a root may not exist at creation)."""
        if self._limits is None:
            roots = tuple(Path(r).expanduser().resolve() for r in self.options.roots)
            self._limits = Limits(roots, self.options.max_pixels, self.options.max_bytes)
        return self._limits

    def validate(self, value: Any, record_id: object, field: str) -> ImageValue:
        with _bombs_are_errors():
            return Check(self.limits, record_id, field).value(value)

    def validate_batch(self, values: list[Any], record_ids: list[str], field: str) -> list[Any]:
        """Decode in a thread pool (Pillow releases the GIL while decoding)."""
        if len(values) < 2:
            return super().validate_batch(values, record_ids, field)
        limits = self.limits

        def one(value: Any, rid: str) -> ImageValue | RecordError:
            try:
                return Check(limits, rid, field).value(value)
            except RecordError as e:
                return e

        with _bombs_are_errors():
            return list(_pool().map(one, values, record_ids))

    def to_source(self, value: ImageValue) -> dict[str, Any]:
        shape = {"format": value.format, "width": value.width, "height": value.height}
        if self.options.keep == "reference" and value.path is not None:
            return {"path": value.path, "sha256": value.digest, **shape}
        if self.media is None:
            raise ConfigError(
                "modality 'image': keep='copy' needs the store's media folder, and this "
                "modality has none (media=None); open the store for writing, or use "
                "keep='reference' with image paths"
            )
        if not self.media.exists(value.digest):
            self.media.put(value.read(), value.digest)
        return {"media": value.digest, **shape}

    def from_source(self, source: Any) -> ImageValue:
        if not isinstance(source, dict) or not ({"media", "path"} & source.keys()):
            raise NotFoundError(f"not an image source (media or path): {source!r}")
        shape = (
            str(source.get("format")),
            int(source.get("width", 0)),
            int(source.get("height", 0)),
        )
        if "media" in source:
            if self.media is None:
                raise ConfigError("modality 'image': reading stored media needs a media store")
            if not self.media.exists(source["media"]):
                self.media.get(source["media"])  # raises NotFoundError saying what to do
            return ImageValue(source["media"], *shape, media=self.media)
        path, digest = self._under_roots(Path(source["path"])), source["sha256"]
        try:
            current = file_digest(path)
        except FileNotFoundError:
            raise NotFoundError(
                f"referenced image {str(path)!r} is gone; restore it, or ingest the record "
                "again (keep='copy' keeps a copy in the store)"
            ) from None
        if current != digest:
            raise changed(path, digest)
        return ImageValue(digest, *shape, path=str(path))

    def _under_roots(self, path: Path) -> Path:
        """A referenced file's real path, refused unless under the roots (the catalog may
        have been altered, or the roots narrowed, since the record was ingested)."""
        roots = self.limits.roots
        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError) as e:  # a loop, a NUL byte
            raise ReferenceChangedError(f"referenced image {str(path)!r}: {e}") from e
        if not any(real.is_relative_to(root) for root in roots):
            raise ReferenceChangedError(
                f"referenced image {str(path)!r} is not under the roots "
                f"{[str(r) for r in roots]}; add its folder to options={{'image': "
                "{'roots': [...]}}, or ingest the record again"
            )
        return real

    def fingerprint(self, value: ImageValue) -> str:
        return value.digest


@contextlib.contextmanager
def _bombs_are_errors() -> Iterator[None]:
    """Pillow's DecompressionBombWarning raised as an error (seen by the pool's threads
    too: the filter list is process-wide)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _pool() -> ThreadPoolExecutor:
    return shared_pool("image")


@hookimpl
def mmstore_register_modalities() -> list[type[Modality]]:
    return [ImageModality]
