"""Every error class of mmstore.errors survives the HTTP round trip as itself: a real service
on a loopback port raises it from a route, and the client raises the same class with the
same message, the class's HTTP status and, for record errors, the record and field."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import mmstore
from mmstore import errors
from mmstore.client import Client
from mmstore.service.app import create_app
from mmstore.service.settings import Settings
from tests.servers import running

ERROR_CLASSES = sorted(
    (c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, errors.MMStoreError)),
    key=lambda c: c.__name__,
)


def _instance(cls: type[errors.MMStoreError]) -> errors.MMStoreError:
    """An instance with a known message, whatever the class's constructor takes."""
    e = cls.remote(f"a {cls.__name__} raised on purpose")
    if isinstance(e, errors.RecordError):
        e.record_id, e.field, e.problem = "r-7", "text", "on purpose"
    return e


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    path: Path = tmp_path_factory.mktemp("wire") / "store"
    store = mmstore.open(path)
    app = create_app(store, Settings(auth=False))
    by_name = {c.__name__: c for c in ERROR_CLASSES}

    @app.get("/raise/{name}")
    def _raise(name: str) -> None:
        raise _instance(by_name[name])

    with running(app) as url, Client(url) as c:
        yield c
    store.close()


def test_a_storage_error_built_by_its_constructor_says_what_to_do() -> None:
    e = errors.StorageError(28, "s", "ingest into collection 'c'", "catalog", reopen=False)
    assert "free space and call it again" in str(e)


def test_every_error_class_is_exported_from_the_package() -> None:
    assert {c.__name__ for c in ERROR_CLASSES} <= set(mmstore.__all__)
    assert all(c.__module__ == "mmstore.errors" for c in ERROR_CLASSES)


def test_no_mmstore_error_class_is_defined_outside_errors() -> None:
    import pkgutil

    outside = []
    for info in pkgutil.walk_packages(mmstore.__path__, "mmstore."):
        if info.name == "mmstore.__main__":
            continue  # importing it runs the command line
        module = __import__(info.name, fromlist=["_"])
        outside += [
            f"{info.name}.{n}"
            for n, c in vars(module).items()
            if inspect.isclass(c)
            and issubclass(c, errors.MMStoreError)
            and c.__module__ == info.name
            and info.name != "mmstore.errors"
        ]
    assert outside == []


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_an_error_survives_the_round_trip_as_itself(
    client: Client, cls: type[errors.MMStoreError]
) -> None:
    with pytest.raises(errors.MMStoreError) as caught:
        client.request("GET", f"/raise/{cls.__name__}")
    e = caught.value
    assert type(e) is cls
    assert f"a {cls.__name__} raised on purpose" in str(e)
    assert e.status == cls.http_status  # type: ignore[attr-defined]
    if issubclass(cls, errors.RecordError):
        assert (e.record_id, e.field) == ("r-7", "text")
