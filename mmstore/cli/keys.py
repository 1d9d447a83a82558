"""Command-line verbs for the service's API keys: ``mmstore keys create|list|revoke``.
Added to the ``mmstore`` group by :mod:`mmstore.cli.main` (``COMMANDS``).
A key's token is printed once, by ``create``, and is never stored."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mmstore.cli.common import errors
from mmstore.service.keys import KeyInfo, KeyStore
from mmstore.store import open as open_store


def _line(info: KeyInfo) -> str:
    state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
    return (
        f"{info.id:<11} {info.name:<20} {','.join(info.scopes):<17} "
        f"{','.join(info.collections):<24} {state}"
    )


@click.group()
def keys() -> None:
    """Create, list and revoke the API keys of `mmstore serve`."""


@keys.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="What the key is for.")
@click.option(
    "--scopes",
    default="read",
    show_default=True,
    help="Comma-separated: read, write, admin (admin includes write and read).",
)
@click.option(
    "--collections",
    default="*",
    show_default=True,
    help="Comma-separated collection names, or * for all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the token).")
@errors
def create(path: Path, name: str, scopes: str, collections: str, as_json: bool) -> None:
    """Create a key in the store at PATH and print its token (shown only this once)."""
    with open_store(path) as store:
        info, token = KeyStore(store.catalog).create(name, scopes, collections)
    if as_json:
        click.echo(json.dumps(info.to_dict() | {"token": token}))
        return
    click.echo(
        f"created API key {info.id} ({info.name}): scopes "
        f"{','.join(info.scopes)}, collections {','.join(info.collections)}"
    )
    click.echo(token)
    click.echo("store the key now: it is not shown again", err=True)


@keys.command("list")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def list_keys(path: Path, as_json: bool) -> None:
    """List the keys (never their secrets), revoked ones included."""
    with open_store(path, read_only=True) as store:
        rows = KeyStore(store.catalog).list()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no API keys; `mmstore keys create` makes one")
    for r in rows:
        click.echo(_line(r))


@keys.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("key_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def revoke(path: Path, key_id: str, as_json: bool) -> None:
    """Revoke key ID for good."""
    with open_store(path) as store:
        info = KeyStore(store.catalog).revoke(key_id)
    if as_json:
        click.echo(json.dumps(info.to_dict()))
        return
    click.echo(f"revoked API key {info.id} ({info.name})")


#: the commands this module adds to the ``mmstore`` group
COMMANDS = [keys]
