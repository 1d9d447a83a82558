"""What an ingest or re-embed call reports (its counts and the records it left out) and
the options every batch job checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import numpy as np

from mmstore.api import IngestReport, Rejected
from mmstore.errors import InvalidInputError

OnError = Literal["raise", "skip"]
__all__ = ["GivenVector", "IngestReport", "OnError", "Rejected", "check_run_options"]


class GivenVector(NamedTuple):
    """A vector computed elsewhere (a Ray worker) for one record's field: used instead of
    calling the encoder only when the value's source hash and the encoder identity match
    the field's, and checked like the encoder's own output."""

    source_hash: str
    encoder_key: str
    vector: np.ndarray


def check_run_options(on_error: str, size_name: str, size: int) -> None:
    """The options every batch job takes: how to treat bad records, and a batch size."""
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"{size_name} must be a positive int, got {size!r}")


def iter_ids(ids: Any) -> Iterator[str]:
    """Ids given as one id or an iterable of them, as strings."""
    if isinstance(ids, str | int):
        ids = [ids]
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, str | int):
            raise InvalidInputError(f"ids are strings or ints, got {i!r}")
        yield str(i)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, desc: str, total: int | None = None, initial: int = 0) -> Any:
    """A tqdm bar over records when ``enabled``, else one that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(desc=desc, total=total, initial=initial, unit="rec")
