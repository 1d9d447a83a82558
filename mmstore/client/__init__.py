"""A Python client of the HTTP service with the embedded collection's API, so that code
moves between an embedded store and a served one without change::

    client = mmstore.Client("http://127.0.0.1:8080", key="mms_...")
    col = client.collection("products")
    col.ingest(records); col.search(text="red shoe", target="image", k=5)

It takes what the embedded collection takes (dicts, pandas and Arrow tables, numpy
arrays, ``(samples, sample_rate)`` audio, PIL images, bytes, paths the service may read),
sent in the wire form of :mod:`mmstore.wire`; it returns the same reports
(:class:`~mmstore.api.IngestReport`, :class:`~mmstore.api.HeadReport`, hits) and raises
the same exception classes, by the name in the service's error body.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mmstore import errors, wire
from mmstore.api import HeadReport
from mmstore.client import replies
from mmstore.client.collection import RemoteCollection

if TYPE_CHECKING:
    from mmstore.api import CollectionAPI
    from mmstore.collection import Collection

__all__ = ["Client", "RemoteCollection"]

#: how many times a request answered 503 with Retry-After (busy) is sent again
BUSY_RETRIES = 5


class Client:
    """A connection to ``mmstore serve`` at ``url`` with an API key."""

    def __init__(self, url: str, key: str | None = None, *, timeout: float = 60.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._limits: dict[str, Any] | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; a service error is raised as the matching mmstore exception. A 503
        with ``Retry-After`` (the service was busy and did not start the request) is sent
        again after the pause it asks for, up to ``BUSY_RETRIES`` times."""
        for attempt in range(BUSY_RETRIES + 1):
            response = self._send(method, path, **kwargs)
            pause = response.headers.get("retry-after", "")
            if response.status_code != 503 or not pause.isdigit() or attempt == BUSY_RETRIES:
                break
            time.sleep(min(int(pause), 5))
        if response.status_code >= 400:
            raise replies.error(response)
        return response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise errors.ServiceUnavailableError(self.url, e) from None

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/health")
        return out

    def limits(self) -> dict[str, Any]:
        """The service's request limits (``max_batch``, ``max_body_bytes``, ...), read once."""
        if self._limits is None:
            self._limits = dict(self.health()["limits"])
        return self._limits

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
        self.request("POST", "/collections", json=wire.encode(body))
        return RemoteCollection(self, name)

    def collection(self, name: str) -> RemoteCollection:
        self.request("GET", f"/collections/{name}")  # raises UnknownNameError if absent
        return RemoteCollection(self, name)

    def drop_collection(self, name: str) -> None:
        self.request("DELETE", f"/collections/{name}")

    def job(self, job_id: str) -> dict[str, Any]:
        """A background job's status (``queued``, ``running``, ``done``, ``failed``, or
        ``interrupted`` when the service stopped while it ran)."""
        out: dict[str, Any] = self.request("GET", f"/jobs/{job_id}")
        return out

    def wait(self, job_id: str, timeout: float | None = None) -> HeadReport:
        """Poll a head-training job until it ends: its report, or its error raised as the
        class the embedded call would have raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        status = self.job(job_id)
        while status["status"] in ("queued", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id!r} still {status['status']} after {timeout} s")
            time.sleep(pause)
            pause = min(pause * 1.5, 1.0)
            status = self.job(job_id)
        if status["status"] in ("failed", "interrupted"):
            raise replies.raised(dict(status.get("error") or {}), f"job {job_id}")
        return replies.head_report(status["report"])


def _same_api(embedded: Collection, remote: RemoteCollection) -> list[CollectionAPI]:
    """Never called: mypy checks here that both collections satisfy :class:`CollectionAPI`."""
    return [embedded, remote]
