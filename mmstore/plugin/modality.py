"""The modality contract: what values a modality accepts, how they are validated and
stored, and how a stored source is turned back into something an encoder takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mmstore.errors import ConfigError, RecordError

if TYPE_CHECKING:
    import numpy as np

    from mmstore.storage.media import MediaStore


class ModalityOptions(BaseModel):
    """Base for a modality's options: typed, and unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Modality:
    """Base class of every modality.

    ``validate`` raises :class:`~mmstore.errors.RecordError` naming the record; what it
    returns is what encoders receive. ``to_source`` gives the JSON-able form stored in the
    catalog (inline text, a media digest, a reference) and ``from_source`` reverses it, so
    that a new encoder can re-embed without the originals.

    Options come from the collection: ``options={"image": {...}}`` for every field of the
    modality, and a field's ``modality_options`` on top. ``media`` is the store's
    content-addressed blob store (:class:`mmstore.storage.media.MediaStore`) for modalities whose
    values are too large to keep inline; it is ``None`` where nothing may be written.
    """

    name: ClassVar[str]
    Options: ClassVar[type[ModalityOptions]] = ModalityOptions
    #: whether values are small enough to keep inline in the catalog (documentation for
    #: readers of the plugin; the core does not act on it)
    inline: ClassVar[bool] = True
    #: file name suffixes (lower case, with the dot) of files whose bytes are a value of
    #: this modality; ``mmstore ingest`` of a folder maps each file to a field by them
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, media: MediaStore | None = None, **options: Any) -> None:
        try:
            self.options = self.Options(**options)
        except ValidationError as e:
            problems = "; ".join(_problem(err) for err in e.errors())
            known = ", ".join(f"{k}={v!r}" for k, v in option_defaults(self.Options).items())
            raise ConfigError(
                f"modality {self.name!r}: {problems}. Its options (with their defaults): "
                f"{known or 'none'} (`mmstore modalities` lists them for every modality)"
            ) from e
        self.media = media

    def validate(self, value: Any, record_id: object, field: str) -> Any:
        """Check and normalize one value; raise RecordError if it is unusable."""
        raise RecordError(record_id, field, f"modality {self.name!r} accepts no values")

    def validate_batch(self, values: list[Any], record_ids: list[str], field: str) -> list[Any]:
        """Validate many values at once: each item is the value or the RecordError that
        rejects its record. Override to vectorize; the default calls :meth:`validate`."""
        out: list[Any] = []
        for value, rid in zip(values, record_ids, strict=True):
            try:
                out.append(self.validate(value, rid, field))
            except RecordError as e:
                out.append(e)
        return out

    def validate_matrix(
        self, matrix: np.ndarray, record_ids: Sequence[str], field: str
    ) -> dict[int, RecordError] | None:
        """Check the rows of a numeric column at once, as one ``(n, d)`` float32 array,
        for the columnar write path: the RecordError of each row that fails, by row.
        ``None`` (the default) means this modality takes no columns: its values go
        through :meth:`validate_batch` one Python object each."""
        return None

    def to_source(self, value: Any) -> Any:
        """The JSON-able form kept in the catalog."""
        return value

    def from_source(self, source: Any) -> Any:
        """Rebuild an encoder input from what :meth:`to_source` stored."""
        return source

    def fingerprint(self, value: Any) -> str | bytes:
        """Stable text or bytes of the validated value, hashed to detect unchanged content."""
        return repr(self.to_source(value))


def option_defaults(options: type[BaseModel]) -> dict[str, Any]:
    """A modality's options (or an encoder's parameters), each with its default
    (``"required"`` when it has none)."""
    return {
        k: "required" if f.is_required() else f.get_default(call_default_factory=True)
        for k, f in options.model_fields.items()
    }


def _problem(error: Any) -> str:
    name = ".".join(str(p) for p in error["loc"]) or "options"
    if error["type"] == "extra_forbidden":
        return f"unknown option {name!r}"
    return f"option {name!r}: {error['msg']}"
