"""A Python client of the HTTP service that mirrors the store's API, so that code moves
between an embedded store and a served one without change::

    client = mmstore.Client("http://127.0.0.1:8080", key="mms_...")
    col = client.collection("products")
    col.ingest(records); col.search(text="red shoe", target="image", k=5)

Errors come back as the same exception classes the embedded store raises (by the name in
the service's JSON error body); media values (bytes, PIL images) travel as base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mmstore import errors
from mmstore.hits import Hit, Hits

if TYPE_CHECKING:
    from mmstore.api import CollectionAPI
    from mmstore.collection import Collection


class Client:
    """A connection to ``mmstore serve`` at ``url`` with an API key."""

    def __init__(self, url: str, key: str | None = None, *, timeout: float = 60.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; a service error is raised as the matching mmstore exception."""
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/health")
        return out

    def collections(self) -> list[str]:
        names: list[str] = self.request("GET", "/collections")["collections"]
        return names

    def create_collection(
        self,
        name: str,
        encoders: Mapping[str, Any],
        *,
        options: Mapping[str, Any] | None = None,
        index: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> RemoteCollection:
        body = {"name": name, "encoders": dict(encoders), "exist_ok": exist_ok}
        body |= {k: dict(v) for k, v in (("options", options), ("index", index)) if v}
        self.request("POST", "/collections", json=body)
        return RemoteCollection(self, name)

    def collection(self, name: str) -> RemoteCollection:
        self.request("GET", f"/collections/{name}")  # raises UnknownNameError if absent
        return RemoteCollection(self, name)

    def drop_collection(self, name: str) -> None:
        self.request("DELETE", f"/collections/{name}")


class RemoteCollection:
    """A served collection: the methods of :class:`mmstore.Collection`, over HTTP."""

    def __init__(self, client: Client, name: str) -> None:
        self.client, self.name = client, name
        self._path = f"/collections/{name}"

    def __repr__(self) -> str:
        return f"<RemoteCollection {self.name!r}>"

    def ingest(self, records: Any, *, on_error: str = "raise") -> dict[str, Any]:
        items = [records] if isinstance(records, Mapping) else list(records)
        body = {"records": [_jsonable(r) for r in items], "on_error": on_error}
        out: dict[str, Any] = self.client.request("POST", f"{self._path}/records", json=body)
        return out

    def search(
        self,
        *,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        vector: Any = None,
        record: str | int | None = None,
        fusion: str = "rrf",
        weights: Mapping[str, float] | None = None,
        head: str | None = None,
        **values: Any,
    ) -> Hits:
        body: dict[str, Any] = {"values": {k: _jsonable(v) for k, v in values.items()}, "k": k}
        extra = {"target": target, "where": where, "record": record, "head": head}
        body |= {key: v for key, v in extra.items() if v is not None}
        body |= {"fusion": fusion} | ({"weights": dict(weights)} if weights else {})
        if vector is not None:
            body["vector"] = _jsonable(vector)
        out = self.client.request("POST", f"{self._path}/search", json=body)
        return Hits(_hit(h) for h in out["hits"])

    def search_many(
        self,
        vectors: Any = None,
        *,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> list[Hits]:
        body: dict[str, Any] = {"values": {n: _jsonable(list(v)) for n, v in values.items()}}
        body |= {"k": k} | {key: v for key, v in (("target", target), ("where", where)) if v}
        if vectors is not None:
            body["vectors"] = _jsonable(vectors)
        out = self.client.request("POST", f"{self._path}/search_many", json=body)
        return [Hits(_hit(h) for h in result["hits"]) for result in out["results"]]

    def get(self, ids: str | int | Iterable[str | int]) -> list[dict[str, Any]]:
        wanted = [ids] if isinstance(ids, str | int) else list(ids)
        params = {"ids": ",".join(str(i) for i in wanted)}
        rows: list[dict[str, Any]] = self.client.request(
            "GET", f"{self._path}/records", params=params
        )["records"]
        return rows

    def delete(self, ids: str | int | Iterable[str | int]) -> int:
        wanted = [ids] if isinstance(ids, str | int) else list(ids)
        body = {"ids": [str(i) for i in wanted]}
        return int(
            self.client.request("POST", f"{self._path}/records/delete", json=body)["deleted"]
        )

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
        self, name: str, kind: str = "classifier", *, wait: bool = True, **options: Any
    ) -> dict[str, Any]:
        """Start training on the service; with ``wait`` poll the job until it ends and
        return its report (a failed job raises its error)."""
        body = {"name": name, "kind": kind, **_jsonable(options)}
        job = self.client.request("POST", f"{self._path}/heads", json=body)["job"]
        status: dict[str, Any] = self.client.request("GET", f"/jobs/{job}")
        while wait and status["status"] in ("queued", "running"):
            time.sleep(0.2)
            status = self.client.request("GET", f"/jobs/{job}")
        if status["status"] == "failed":
            raise errors.MMStoreError(f"training head {name!r} failed: {status.get('error')}")
        return status

    def predict(self, name: str, records: Any) -> list[dict[str, Any]]:
        items = [records] if isinstance(records, str | Mapping) else list(records)
        body = {"records": [_jsonable(r) for r in items]}
        rows: list[dict[str, Any]] = self.client.request(
            "POST", f"{self._path}/heads/{name}/predict", json=body
        )["predictions"]
        return rows


def _jsonable(value: Any) -> Any:
    """Values as JSON: bytes and images as ``{"$base64": ...}``, arrays as lists."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if type(value).__module__.startswith("PIL."):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return _jsonable(buffer.getvalue())
    return value


def _hit(data: Mapping[str, Any]) -> Hit:
    ts = data.get("ts")
    return Hit(
        id=data["id"],
        score=float(data["score"]),
        field=data["field"],
        modality=data["modality"],
        label=data.get("label"),
        ts=dt.datetime.fromisoformat(ts) if isinstance(ts, str) else ts,
        meta=dict(data.get("meta") or {}),
        values=dict(data.get("values") or {}),
    )


def _error(response: Any) -> errors.MMStoreError:
    """The exception the embedded store would have raised, from the service's error body."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body.get("detail"), dict) else body
    name = str(detail.get("error") or "MMStoreError")
    message = str(detail.get("message") or detail or response.text)
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.MMStoreError)):
        cls = errors.MMStoreError
    error = cls.remote(f"{message} (HTTP {response.status_code})")
    for attr in ("record_id", "field", "problem"):
        key = "record" if attr == "record_id" else attr
        if key in detail:
            setattr(error, attr, detail[key])
    error.status = response.status_code  # type: ignore[attr-defined]
    return error


def _same_api(embedded: Collection, remote: RemoteCollection) -> list[CollectionAPI]:
    """Never called: mypy checks here that both collections satisfy :class:`CollectionAPI`."""
    return [embedded, remote]
