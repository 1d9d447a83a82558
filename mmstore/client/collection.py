"""A served collection with the methods of :class:`mmstore.Collection`: what it takes is
sent in the wire form of :mod:`mmstore.wire`, an ingest larger than one request allows is
split into several, and what comes back is read by :mod:`mmstore.client.replies`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mmstore import errors, wire
from mmstore.api import HeadReport, IngestReport, Rejected
from mmstore.client import replies
from mmstore.hits import Hits

if TYPE_CHECKING:
    from mmstore.client import Client

#: bytes of a request body besides its records (``{"records": [...], "on_error": ...}``)
_BODY_OVERHEAD = 64


class RemoteCollection:
    """A served collection: the methods of :class:`mmstore.Collection`, over HTTP."""

    def __init__(self, client: Client, name: str) -> None:
        self.client, self._name = client, name
        self._path = f"/collections/{name}"

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<RemoteCollection {self.name!r} at {self.client.url}>"

    def ingest(self, records: Any, *, on_error: Literal["raise", "skip"] = "raise") -> IngestReport:
        """Insert or update records by id, as :meth:`mmstore.Collection.ingest` does. A call
        of more than the service's ``max_batch`` records (or ``max_body_bytes``) is sent as
        several requests, each one ingest run committed whole; the report adds them up, with
        the last run's id. If a later request fails, the error says how many records the
        earlier ones wrote."""
        reports: list[IngestReport] = []
        for offset, body in self._ingest_bodies(records, on_error):
            try:
                out = self.client.request(
                    "POST",
                    f"{self._path}/records",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            except errors.MMStoreError as e:
                raise _shifted(e, offset, sum(r.written for r in reports)) from None
            reports.append(_shifted_report(replies.ingest_report(out), offset))
        return _merged(reports)

    def _ingest_bodies(self, records: Any, on_error: str) -> Iterator[tuple[int, str]]:
        """Request bodies of at most ``max_batch`` records and ``max_body_bytes`` bytes,
        each with the position of its first record in the call."""
        from mmstore.ingest.sources import chunks

        limits = self.client.limits()
        max_bytes = int(limits["max_body_bytes"]) - _BODY_OVERHEAD
        tail = f'], "on_error": {json.dumps(on_error)}}}'
        offset, sent = 0, False
        for chunk in chunks(records, int(limits["max_batch"])):
            rows = [json.dumps(wire.encode(r)) for r in chunk]  # NaN too: the store refuses it
            for batch in _by_size(rows, max_bytes):
                yield offset, '{"records": [' + ", ".join(batch) + tail
                offset, sent = offset + len(batch), True
        if not sent:  # an empty call is a run too, as on an embedded collection
            yield 0, '{"records": [' + tail

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
    ) -> Hits:
        body: dict[str, Any] = {"values": values, "k": k, "fusion": fusion}
        extra = {"target": target, "where": where, "record": record, "head": head}
        body |= {key: v for key, v in extra.items() if v is not None}
        body |= {"weights": dict(weights)} if weights else {}
        if vector is not None:
            body["vector"] = _vector_form(vector)
        out = self.client.request("POST", f"{self._path}/search", json=wire.encode(body))
        return Hits(replies.hit(h) for h in out["hits"])

    def search_many(
        self,
        vectors: Any = None,
        *,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> list[Hits]:
        body: dict[str, Any] = {"values": {n: list(v) for n, v in values.items()}, "k": k}
        body |= {key: v for key, v in (("target", target), ("where", where)) if v}
        if vectors is not None:
            body["vectors"] = _vector_form(vectors)
        out = self.client.request("POST", f"{self._path}/search_many", json=wire.encode(body))
        return [Hits(replies.hit(h) for h in result["hits"]) for result in out["results"]]

    def get(self, ids: str | int | Iterable[str | int]) -> list[dict[str, Any]]:
        params = {"ids": ",".join(_ids(ids))}
        rows = self.client.request("GET", f"{self._path}/records", params=params)["records"]
        return [replies.record_row(r) for r in rows]

    def delete(self, ids: str | int | Iterable[str | int]) -> int:
        body = {"ids": _ids(ids)}
        out = self.client.request("POST", f"{self._path}/records/delete", json=body)
        return int(out["deleted"])

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = self.client.request("GET", self._path)
        return out

    def count(self) -> int:
        return int(self.info()["records"])

    def __len__(self) -> int:
        return self.count()

    def heads(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.request("GET", f"{self._path}/heads")["heads"]
        return rows

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
    ) -> HeadReport:
        """Train on the service and wait for the job: its :class:`HeadReport`, or the error
        the embedded call would have raised (the same class)."""
        job = self.start_training(
            name, kind, inputs=inputs, label=label, fusion=fusion, epochs=epochs, **options
        )
        return self.client.wait(job)

    def start_training(self, name: str, kind: str = "classifier", **options: Any) -> str:
        """Start training a head as a job of the service and return its id at once (follow
        it with ``client.job(id)``, or ``client.wait(id)`` for the report)."""
        given = {k: v for k, v in options.items() if v is not None}
        if "inputs" in given:
            given["inputs"] = list(given["inputs"])
        body = wire.encode({"name": name, "kind": kind, **given})
        job: str = self.client.request("POST", f"{self._path}/heads", json=body)["job"]
        return job

    def predict(
        self, name: str, records: Any, *, on_error: Literal["raise", "skip"] = "raise"
    ) -> list[dict[str, Any]]:
        items = [records] if isinstance(records, str | int | Mapping) else list(records)
        body = wire.encode({"records": items, "on_error": on_error})
        rows: list[dict[str, Any]] = self.client.request(
            "POST", f"{self._path}/heads/{name}/predict", json=body
        )["predictions"]
        return rows


def _ids(ids: str | int | Iterable[str | int]) -> list[str]:
    from mmstore.ingest.report import iter_ids

    return list(iter_ids(ids))


def _vector_form(vectors: Any) -> Any:
    """A query vector or rows of them as a float32 ``$array``."""
    import numpy as np

    try:
        with np.errstate(over="ignore"):  # past float32's range: the service refuses inf
            return np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):  # the service says what is wrong with it
        return vectors


def _by_size(rows: list[str], max_bytes: int) -> Iterator[list[str]]:
    """Consecutive runs of ``rows`` whose joined size stays under ``max_bytes`` (a row over
    it alone goes by itself, for the service to refuse by name)."""
    batch: list[str] = []
    size = 0
    for row in rows:
        n = len(row.encode()) + 2
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += n
    if batch:
        yield batch


def _merged(reports: list[IngestReport]) -> IngestReport:
    if len(reports) == 1:
        return reports[0]
    out = IngestReport(reports[-1].run_id)
    for r in reports:
        out.received += r.received
        out.written += r.written
        out.unchanged += r.unchanged
        out.encoded += r.encoded
        out.rejected += r.rejected
        out.seconds += r.seconds
    return out


_POSITION = re.compile(r"#(\d+)")


def _position(rid: Any, offset: int) -> Any:
    """A record named by its position in one request ("#3"), as its position in the call."""
    found = _POSITION.fullmatch(rid) if isinstance(rid, str) and offset else None
    return f"#{int(found[1]) + offset}" if found else rid


def _shifted_report(report: IngestReport, offset: int) -> IngestReport:
    report.rejected = [
        Rejected(_position(r.id, offset), r.field, r.reason) if r.field in (None, "id") else r
        for r in report.rejected
    ]
    return report


def _shifted(e: errors.MMStoreError, offset: int, written: int) -> errors.MMStoreError:
    """The error of a later request of one ingest call, naming its record as a position in
    the call, and saying what the earlier requests wrote."""
    if offset == 0:
        return e
    note = ""
    if isinstance(e, errors.RecordError) and _position(e.record_id, offset) != e.record_id:
        old, e.record_id = e.record_id, _position(e.record_id, offset)
        note = f" (record {old!r} of its request)"
    note += (
        f" [the first {offset} records of this call were sent in earlier requests, which "
        f"wrote {written}; this call was split because the service takes at most "
        "max_batch records and max_body_bytes per request]"
    )
    e.args = (f"{e.args[0] if e.args else ''}{note}",)
    if hasattr(e, "message"):
        e.message = f"{e.message}{note}"
    return e
