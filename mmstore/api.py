"""The calls an embedded :class:`mmstore.Collection` and the client's
:class:`mmstore.client.RemoteCollection` share, as a Protocol, and the reports both return
(ingest, head): code typed against ``CollectionAPI`` runs on either, and mypy checks both
against it (mmstore/client/__init__.py). The reports live here, below :mod:`mmstore.ingest` and
:mod:`mmstore.heads`, so that the client reads them without loading torch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mmstore.hits import Hits


@dataclass(frozen=True)
class Rejected:
    """A record left out by ``on_error="skip"``, and why."""

    id: str
    field: str | None
    reason: str


@dataclass
class IngestReport:
    """What one ``ingest`` call did."""

    run_id: int
    received: int = 0
    written: int = 0
    unchanged: int = 0
    encoded: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"ingest run {self.run_id}: {self.received} received, {self.written} written, "
            f"{self.unchanged} unchanged, {len(self.rejected)} rejected, "
            f"{self.encoded} vectors encoded in {self.seconds:.2f}s"
        )


@dataclass
class HeadReport:
    """What a training returns: the test-split metrics, the history and the files written."""

    name: str
    kind: str
    path: Path
    classes: list[str]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(repr=False)
    best_epoch: int
    split_rows: dict[str, int]
    excluded: dict[str, int]
    files: dict[str, Path] = field(repr=False)

    @property
    def accuracy(self) -> float | None:
        acc: float | None = self.metrics.get("accuracy")
        return acc

    def __str__(self) -> str:
        m = self.metrics
        if self.kind == "retrieval":
            base = m.get("baseline", {})
            parts = [
                f"{d.replace('_', ' ')}: R@1/5/10 "
                + "/".join(f"{m[d][f'recall@{k}']:.3f}" for k in (1, 5, 10))
                + f" (untrained {base[d]['recall@10']:.3f} at 10), median rank "
                + f"{m[d]['median_rank']}"
                for d in ("query_to_target", "target_to_query")
            ]
            return (
                f"head {self.name!r} (retrieval) on {m.get('rows')} test pairs: "
                f"{'; '.join(parts)}; best epoch {self.best_epoch}; rows {self.split_rows}; "
                f"left out {self.excluded}"
            )
        return (
            f"head {self.name!r} ({self.kind}): accuracy {m.get('accuracy')}, macro-F1 "
            f"{m.get('macro_f1')}, ROC-AUC {m.get('roc_auc')} on {m.get('rows')} test rows; "
            f"best epoch {self.best_epoch}; rows {self.split_rows}; left out {self.excluded}"
        )


class CollectionAPI(Protocol):
    """Ingest, search, read, delete, train and predict: the same arguments, results and
    exception classes on both."""

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

    def predict(
        self, name: str, records: Any, *, on_error: Literal["raise", "skip"] = "raise"
    ) -> list[dict[str, Any]]: ...

    def ingest(
        self, records: Any, *, on_error: Literal["raise", "skip"] = "raise"
    ) -> IngestReport: ...

    def train_head(
        self,
        name: str,
        kind: str = "classifier",
        *,
        inputs: Sequence[str] | None = None,
        label: str | None = None,
        fusion: str | None = None,
        epochs: int | None = None,
        **options: Any,
    ) -> HeadReport: ...
