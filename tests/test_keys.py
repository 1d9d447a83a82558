"""API keys (issue 5, access control): hashed at rest, scopes that nest, collections, the
service's `authorize` (401/403) and `mmstore keys create|list|revoke`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

import mmstore
from mmstore.cli.keys import keys as keys_group
from mmstore.errors import ConfigError, InvalidInputError, MMStoreError, NotFoundError
from mmstore.service.auth import authorize
from mmstore.service.keys import KeyInfo, KeyStore
from mmstore.storage import migrations as migrate
from mmstore.storage import schema
from mmstore.storage.catalog import Catalog
from mmstore.store import CATALOG_FILE


@pytest.fixture
def keys(store: mmstore.Store) -> KeyStore:
    return KeyStore(store.catalog)


# --- migration and schema ---------------------------------------------------------------


def test_migration_creates_the_table_and_matches_the_schema(store: mmstore.Store) -> None:
    assert migrate.head_revision() == "0006"  # 0004 segments, 0005 index stamps, 0006 jobs
    assert {"mms_api_keys", "mms_jobs"} <= set(sa.inspect(store.catalog.conn).get_table_names())
    assert migrate.schema_differences(store.catalog.conn, schema.metadata) == []


def test_a_catalog_at_0002_is_upgraded(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    catalog = Catalog(tmp_path / "s" / CATALOG_FILE)
    command.upgrade(migrate.alembic_config(catalog.conn), "0002")
    catalog.conn.commit()
    assert "mms_api_keys" not in sa.inspect(catalog.conn).get_table_names()
    catalog.close()
    with mmstore.open(tmp_path / "s") as store:
        assert migrate.current_revision(store.catalog.conn) == migrate.head_revision()
        assert migrate.schema_differences(store.catalog.conn, schema.metadata) == []


# --- KeyStore -----------------------------------------------------------------------------


def test_create_then_verify(keys: KeyStore) -> None:
    info, token = keys.create("ci", ["read", "write"], ["docs"])
    assert token.startswith(f"mms_{info.id}_") and len(info.id) == 10
    assert info.scopes == ("read", "write") and info.collections == ("docs",)
    got = keys.verify(token)
    assert got is not None and got.id == info.id and got.name == "ci"
    assert [k.id for k in keys.list()] == [info.id]
    assert keys.get(info.id) == got


def test_the_token_is_not_stored(store_path: Path) -> None:
    with mmstore.open(store_path) as store:
        info, token = KeyStore(store.catalog).create("ci", "admin", "*")
        row = store.catalog.conn.execute(sa.select(schema.api_keys)).one()
        store.catalog.conn.rollback()
        secret = token.removeprefix(f"mms_{info.id}_")
        assert row.hash != token and secret not in row.hash and secret not in row.salt
        assert row.hash.startswith("pbkdf2_sha256$")
        assert KeyStore(store.catalog).verify(token) is not None  # a fresh cache too
    blobs = b"".join(p.read_bytes() for p in store_path.rglob("*") if p.is_file())
    assert token.encode() not in blobs and secret.encode() not in blobs
    assert info.id.encode() in blobs  # the search would find what is there


def test_list_shows_no_secrets(keys: KeyStore) -> None:
    info, token = keys.create("ci", "read", "*")
    shown = json.dumps([k.to_dict() for k in keys.list()])
    assert token.removeprefix(f"mms_{info.id}_") not in shown and "hash" not in shown
    assert set(keys.list()[0].to_dict()) == {
        "id", "name", "scopes", "collections", "created_at", "revoked_at"
    }  # fmt: skip


def test_bad_tokens_fail(keys: KeyStore) -> None:
    info, token = keys.create("ci", "read", "*")
    prefix = f"mms_{info.id}"
    secret = token.removeprefix(prefix + "_")
    assert len(secret) == 43
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    other_id = "k_" + ("0" * 8 if info.id != "k_00000000" else "1" * 8)
    for bad in [
        f"{prefix}_{wrong}",  # wrong secret
        f"mms_{other_id}_{secret}",  # unknown id
        token[:-1],  # truncated
        token + "x",
        "",
        "Bearer " + token,
        secret,
        f"mms_{info.id}",
        None,
        12,
    ]:
        assert keys.verify(bad) is None, bad


def test_a_revoked_key_fails_even_when_cached(keys: KeyStore) -> None:
    info, token = keys.create("ci", "read", "*")
    assert keys.verify(token) is not None  # now cached
    revoked = keys.revoke(info.id)
    assert revoked.revoked and revoked.revoked_at is not None
    assert keys.verify(token) is None
    assert keys.revoke(info.id).revoked_at == revoked.revoked_at  # twice: no change
    with pytest.raises(NotFoundError):
        keys.revoke("k_deadbeef")


def test_last_use_is_recorded(keys: KeyStore, store: mmstore.Store) -> None:
    _, token = keys.create("ci", "read", "*")
    keys.verify(token)
    with store.catalog.reading() as conn:
        used = conn.execute(sa.select(schema.api_keys.c.last_used_at)).scalar_one()
    assert used is not None


def test_scopes_nest() -> None:
    def key(*scopes: str) -> KeyInfo:
        return KeyInfo("k_00000000", "x", scopes, ("*",), None)  # type: ignore[arg-type]

    assert key("read").allows("read") and not key("read").allows("write")
    assert key("write").allows("read") and not key("write").allows("admin")
    assert all(key("admin").allows(s) for s in ("read", "write", "admin"))
    assert key("read", "admin").allows("write")
    with pytest.raises(InvalidInputError):
        key("admin").allows("root")


def test_collections(keys: KeyStore) -> None:
    info, _ = keys.create("ci", "read", "docs, images,docs")
    assert info.collections == ("docs", "images")
    assert info.can_access("docs") and not info.can_access("other")
    every, _ = keys.create("all", "read", ["docs", "*"])
    assert every.collections == ("*",) and every.can_access("anything")


@pytest.mark.parametrize(
    ("name", "scopes", "collections", "error"),
    [
        ("ci", ["root"], "*", InvalidInputError),
        ("ci", "read,superuser", "*", InvalidInputError),
        ("ci", [], "*", InvalidInputError),
        ("ci", "", "*", InvalidInputError),
        ("ci", "read", "Bad-Name", ConfigError),
        ("ci", "read", ["docs", "../x"], ConfigError),
        ("ci", "read", [], InvalidInputError),
        ("", "read", "*", InvalidInputError),
        ("   ", "read", "*", InvalidInputError),
    ],
)
def test_bad_inputs_are_typed_errors(
    keys: KeyStore, name: str, scopes: object, collections: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as e:
        keys.create(name, scopes, collections)  # type: ignore[arg-type]
    assert isinstance(e.value, MMStoreError) and e.value.http_status == 400
    assert keys.list() == []


# --- authorize ------------------------------------------------------------------------------


@pytest.fixture
def client(keys: KeyStore) -> Iterator[TestClient]:
    app = FastAPI()
    app.state.keys = keys

    @app.get("/collections/{c}")
    def read(c: str, request: Request) -> dict[str, str]:
        return {"key": authorize(request, "read", c).id}

    @app.delete("/collections/{c}")
    def drop(c: str, request: Request) -> dict[str, str]:
        return {"key": authorize(request, "admin", c).id}

    @app.get("/metrics")
    def metrics(request: Request) -> dict[str, str]:
        return {"key": authorize(request, "admin").id}

    with TestClient(app) as c:
        yield c


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_401_without_or_with_a_bad_key(client: TestClient, keys: KeyStore) -> None:
    info, token = keys.create("ci", "admin", "*")
    for headers in [
        {},
        _bearer("mms_k_00000000_" + "A" * 43),
        _bearer(token[:-2]),
        _bearer(""),
        {"Authorization": f"Basic {token}"},
        {"Authorization": token},
        {"X-API-Key": "nonsense"},
    ]:
        r = client.get("/collections/docs", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"]["error"] == "Unauthorized"
        assert token not in r.text and token[-20:] not in r.text
    keys.revoke(info.id)
    r = client.get("/collections/docs", headers=_bearer(token))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]["message"]


def test_403_outside_scope_or_collection(client: TestClient, keys: KeyStore) -> None:
    _, reader = keys.create("reader", "read", "docs")
    r = client.delete("/collections/docs", headers=_bearer(reader))
    assert r.status_code == 403
    assert "admin" in r.json()["detail"]["message"] and reader not in r.text
    assert client.get("/metrics", headers=_bearer(reader)).status_code == 403
    r = client.get("/collections/images", headers=_bearer(reader))
    assert r.status_code == 403 and "'images'" in r.json()["detail"]["message"]
    _, writer = keys.create("writer", "write", "*")
    assert client.delete("/collections/docs", headers=_bearer(writer)).status_code == 403


def test_200_inside_scope_and_collection(client: TestClient, keys: KeyStore) -> None:
    reader, token = keys.create("reader", "read", "docs")
    r = client.get("/collections/docs", headers=_bearer(token))
    assert r.status_code == 200 and r.json() == {"key": reader.id}
    assert client.get("/collections/docs", headers={"X-API-Key": token}).status_code == 200
    assert client.get("/collections/docs", headers={"authorization": f"bearer {token}"}).is_success
    admin, token = keys.create("admin", "admin", "*")
    for path in ["/collections/docs", "/collections/anything"]:
        assert client.get(path, headers=_bearer(token)).status_code == 200
        assert client.delete(path, headers=_bearer(token)).status_code == 200
    assert client.get("/metrics", headers=_bearer(token)).json() == {"key": admin.id}


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    @click.option("--traceback", is_flag=True)
    def group(traceback: bool) -> None:
        pass

    group.add_command(keys_group)
    return group


def test_cli_create_list_revoke(cli: click.Group, store_path: Path) -> None:
    run = CliRunner().invoke
    r = run(cli, ["keys", "create", str(store_path), "--name", "ci", "--scopes", "read,write",
                  "--collections", "docs,images", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["scopes"] == ["read", "write"] and made["collections"] == ["docs", "images"]
    token = made["token"]
    r = run(cli, ["keys", "create", str(store_path), "--name", "ops", "--scopes", "admin"])
    assert r.exit_code == 0, r.output
    plain_token = r.stdout.strip().splitlines()[-1]
    assert plain_token.startswith("mms_k_")

    r = run(cli, ["keys", "list", str(store_path), "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert [k["name"] for k in listed] == ["ci", "ops"]
    assert token not in r.stdout and plain_token not in r.stdout
    r = run(cli, ["keys", "list", str(store_path)])
    assert r.exit_code == 0 and made["id"] in r.stdout and "active" in r.stdout

    r = run(cli, ["keys", "revoke", str(store_path), made["id"]])
    assert r.exit_code == 0 and f"revoked API key {made['id']}" in r.stdout
    with mmstore.open(store_path) as store:
        keys = KeyStore(store.catalog)
        assert keys.verify(token) is None
        assert keys.verify(plain_token) is not None
    r = run(cli, ["keys", "list", str(store_path)])
    assert "revoked" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--scopes", "root"],
        ["--scopes", ""],
        ["--collections", "Bad-Name"],
        ["--name", ""],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(
    cli: click.Group, store_path: Path, args: list[str]
) -> None:
    r = CliRunner().invoke(cli, ["keys", "create", str(store_path), "--name", "ci", *args])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["keys", "list", str(store_path), "--json"])
    assert json.loads(r.stdout) == []


def test_cli_revoke_unknown_id(cli: click.Group, store_path: Path) -> None:
    mmstore.open(store_path).close()
    r = CliRunner().invoke(cli, ["keys", "revoke", str(store_path), "k_deadbeef"])
    assert r.exit_code == 1 and "k_deadbeef" in r.stderr
