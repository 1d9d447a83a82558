"""Built-in plugin: the ``text`` modality (UTF-8 strings, kept inline in the catalog)."""

from __future__ import annotations

from typing import Any

from mmstore.plugin import Modality, RecordError, hookimpl

#: longest text accepted, in characters; longer texts are refused, not silently cut
MAX_CHARS = 100_000


class Text(Modality):
    """Text: a non-empty ``str`` (or UTF-8 ``bytes``) of at most ``MAX_CHARS`` characters."""

    name = "text"

    def validate(self, value: Any, record_id: object, field: str) -> str:
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(
                    record_id,
                    field,
                    f"bytes are not valid UTF-8 ({e.reason} "
                    f"at byte {e.start}); decode the text first",
                ) from e
        if not isinstance(value, str):
            raise RecordError(record_id, field, f"expected text, got {type(value).__name__}")
        if not value.strip():
            raise RecordError(record_id, field, "text is empty; leave the field out instead")
        if len(value) > MAX_CHARS:
            raise RecordError(
                record_id,
                field,
                f"text has {len(value):,} characters, more "
                f"than the limit of {MAX_CHARS:,}; split it into several records",
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RecordError(
                record_id,
                field,
                "text holds an unpaired surrogate at "
                f"position {e.start}; it cannot be stored as UTF-8",
            ) from e
        return value

    def fingerprint(self, value: Any) -> str:
        return str(value)


@hookimpl
def mmstore_register_modalities() -> list[type[Modality]]:
    return [Text]
