"""Where a command's collection is: the store on disk, or the mmstore service that holds it.

A command given ``--url`` goes through that service. Without it, the store is opened; when
a running service holds it (``<store>/service.json`` names its URL), the command goes
through that service's API instead of failing on the lock, with ``--key`` (or
``MMSTORE_KEY``) as its API key. Read verbs need a key of scope read, writes one of scope
write, on the collection."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from mmstore.api import CollectionAPI
from mmstore.client import Client
from mmstore.errors import InvalidInputError, ServiceUnavailableError, StoreLockedError
from mmstore.store import Store
from mmstore.store import open as open_store

KEY_ENV, URL_ENV = "MMSTORE_KEY", "MMSTORE_URL"


def service_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--url`` and ``--key`` to a command."""
    command = click.option(
        "--key",
        envvar=KEY_ENV,
        default=None,
        help=f"API key for the service [${KEY_ENV}].",
    )(command)
    return click.option(
        "--url",
        envvar=URL_ENV,
        default=None,
        help="Go through the mmstore service at this URL [the one holding PATH, if any; "
        f"${URL_ENV}].",
    )(command)


@contextlib.contextmanager
def collection(
    path: Path, name: str, *, write: bool, url: str | None, key: str | None
) -> Iterator[CollectionAPI]:
    """Collection ``name`` of the store at ``path``, or of the service that holds it."""
    with where(path, write=write, url=url, key=key) as found:
        yield found.collection(name)


@contextlib.contextmanager
def where(path: Path, *, write: bool, url: str | None, key: str | None) -> Iterator[Store | Client]:
    """The open store at ``path``, or a client of the service at ``url`` or holding it."""
    lock = None
    if url is None:
        store, lock = _open(path, write)
        if store is not None:
            with store:
                yield store
            return
        url = _holder(lock)
    with Client(url, key) as client:
        _check_key(client, path, key, write, lock)
        yield client


def _open(path: Path, write: bool) -> tuple[Store | None, StoreLockedError | None]:
    """The store opened, or the lock error when another process holds it."""
    try:
        return open_store(path, read_only=not write), None
    except StoreLockedError as e:
        return None, e


def _holder(lock: StoreLockedError | None) -> str:
    """The URL of the service that says it holds the store (else the lock error)."""
    from mmstore.service.serve import service_address

    assert lock is not None
    found = service_address(lock.path)
    if found is None:
        raise lock
    return found


def _check_key(
    client: Client, path: Path, key: str | None, write: bool, lock: StoreLockedError | None
) -> None:
    """Without a key, a service that requires one is a clear error, not an HTTP 401. A
    service named by ``service.json`` that does not answer leaves the lock error."""
    try:
        auth = client.health().get("auth", True)
    except ServiceUnavailableError:
        if lock is None:
            raise
        raise lock from None
    if key or not auth:
        return
    scope = "write" if write else "read"
    raise InvalidInputError(
        f"the mmstore service at {client.url} holds the store {str(path)!r}, so this command "
        f"goes through it, and it needs an API key of scope {scope!r}: give --key KEY or set "
        f"{KEY_ENV} (keys are made with `mmstore keys create` while no service runs, or "
        "through the service's admin key)"
    )


def modalities(col: CollectionAPI) -> dict[str, str]:
    """Field -> modality of a collection, embedded or served."""
    return {f["field"]: f["modality"] for f in col.info()["fields"]}
