"""The calls an embedded :class:`mmstore.Collection` and the client's
:class:`mmstore.client.RemoteCollection` share, as a Protocol: code typed against
``CollectionAPI`` runs on either, and mypy checks both against it (mmstore/client.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from mmstore.hits import Hits


class CollectionAPI(Protocol):
    """Search, read, delete and predict: the same arguments and results on both."""

    @property
    def name(self) -> str: ...

    def search(
        self,
        *,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        vector: Any = None,
        record: str | int | None = None,
        fusion: Literal["rrf", "weighted"] = "rrf",
        weights: Mapping[str, float] | None = None,
        head: str | None = None,
        **values: Any,
    ) -> Hits: ...

    def search_many(
        self,
        vectors: Any = None,
        *,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> list[Hits]: ...

    def get(self, ids: str | int | Iterable[str | int]) -> list[dict[str, Any]]: ...

    def delete(self, ids: str | int | Iterable[str | int]) -> int: ...

    def count(self) -> int: ...

    def __len__(self) -> int: ...

    def info(self) -> dict[str, Any]: ...

    def heads(self) -> list[dict[str, Any]]: ...

    def predict(self, name: str, records: Any) -> list[dict[str, Any]]: ...
