"""The command line: ``mmstore demo``, ``plugins``, ``migrate``, ``collections``, ``info``.
Errors print as one line with exit code 1 (``--traceback`` shows the traceback)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from functools import wraps
from pathlib import Path
from typing import Any

import click

import mmstore
from mmstore import migrate
from mmstore.catalog import Catalog
from mmstore.errors import MMStoreError
from mmstore.plugins import PluginHost
from mmstore.store import CATALOG_FILE


def _errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn mmstore errors into one line on stderr and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (MMStoreError, FileNotFoundError) as e:
            if click.get_current_context().find_root().params.get("traceback"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(1)

    return wrapper


@click.group()
@click.version_option(mmstore.__version__, prog_name="mmstore")
@click.option("--traceback", is_flag=True, help="Show the full traceback on errors.")
def cli(traceback: bool) -> None:
    """mmstore: a multimodal feature store and embedding service."""


def main() -> None:
    """The ``mmstore`` command: run, then exit without the bindings' teardown noise."""
    from mmstore._exit import exit_quietly

    try:
        cli.main(standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        exit_quietly(code)
    exit_quietly(0)


@cli.command()
@click.option(
    "--path",
    type=click.Path(path_type=Path),
    default=Path("demo.mms"),
    show_default=True,
    help="Where to build the demo store (replaced).",
)
@click.option(
    "--limit", type=int, default=2000, show_default=True, help="How many docstrings to ingest."
)
@_errors
def demo(path: Path, limit: int) -> None:
    """Build a store of standard-library docstrings on the bundled MiniLM and search it."""
    from mmstore.demo import run

    run(path, limit, click.echo)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def plugins(as_json: bool) -> None:
    """List loaded plugins with their versions, hooks, encoders and modalities."""
    host = PluginHost()
    infos = host.infos()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "plugins": [asdict(i) for i in infos],
                    "encoders": {n: host.owner("encoder", n) for n in sorted(host.encoders)},
                    "modalities": {n: host.owner("modality", n) for n in sorted(host.modalities)},
                },
                indent=2,
            )
        )
        return
    for info in infos:
        click.echo(f"{info.name:<24} {info.version:<10} {info.source:<10} {', '.join(info.hooks)}")
    click.echo(f"\nencoders:   {', '.join(sorted(host.encoders))}")
    click.echo(f"modalities: {', '.join(sorted(host.modalities))}")


@cli.command("migrate")
@click.argument("path", type=click.Path(path_type=Path))
@_errors
def migrate_cmd(path: Path) -> None:
    """Upgrade the catalog schema of the store at PATH to the newest revision."""
    if not (path / CATALOG_FILE).is_file():
        raise FileNotFoundError(f"no store at {str(path)!r}")
    catalog = Catalog(path / CATALOG_FILE)
    try:
        before = migrate.upgrade(catalog.conn)
        after = migrate.current_revision(catalog.conn)
    finally:
        catalog.close()
    click.echo(
        f"{path}: schema {before or '(empty)'} -> {after}"
        if before != after
        else f"{path}: schema {after} is current"
    )


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def collections(path: Path, as_json: bool) -> None:
    """List the collections of the store at PATH."""
    with mmstore.open(path, read_only=True) as store:
        names = store.collections()
    click.echo(json.dumps(names) if as_json else "\n".join(names))


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def info(path: Path, collection: str, as_json: bool) -> None:
    """Counts, fields, encoders and index kinds of a collection."""
    with mmstore.open(path, read_only=True) as store:
        data = store.collection(collection).info()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"{data['name']}: {data['records']} records")
    for f in data["fields"]:
        click.echo(
            f"  {f['field']:<12} {f['modality']:<8} {f['encoder']} v{f['encoder_version']}"
            f" dim={f['dim']} vectors={f['vectors']} index={f['index']}"
        )


if __name__ == "__main__":
    main()
