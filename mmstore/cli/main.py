"""The command line: ``mmstore demo``, ``init``, ``verify``, ``plugins``, ``encoders``,
``modalities``, ``migrate``, ``collections``, ``info``, ``reembed``, ``spaces``, ``gc``,
and the verbs of :mod:`mmstore.cli.records` (``ingest``, ``search``),
:mod:`mmstore.cli.heads` (``train``, ``predict``, ``heads``), :mod:`mmstore.cli.keys`
(``keys``) and :mod:`mmstore.cli.serve` (``serve``). Errors print as one line with exit
code 1 (``--traceback`` shows the traceback); a store held by a service names the
service's address."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from mmstore._version import __version__
from mmstore.cli import heads as cli_heads
from mmstore.cli import keys as cli_keys
from mmstore.cli import records as cli_records
from mmstore.cli import serve as cli_service
from mmstore.cli.common import errors, json_arg
from mmstore.cli.target import collection as find_collection
from mmstore.cli.target import service_options, where
from mmstore.plugin.manager import PluginHost
from mmstore.plugin.modality import option_defaults
from mmstore.storage import migrations as migrate
from mmstore.storage.catalog import Catalog
from mmstore.store import CATALOG_FILE
from mmstore.store import open as open_store


@click.group()
@click.version_option(__version__, prog_name="mmstore")
@click.option("--traceback", is_flag=True, help="Show the full traceback on errors.")
def cli(traceback: bool) -> None:
    """mmstore: a multimodal feature store and embedding service."""


def main() -> None:
    """The ``mmstore`` command: run, then exit without the bindings' teardown noise."""
    from mmstore.cli.exit import exit_quietly

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
@errors
def demo(path: Path, limit: int) -> None:
    """Build a store of standard-library docstrings on the bundled MiniLM and search it."""
    from mmstore.demo import run

    run(path, limit, click.echo)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.option(
    "--fields",
    default='{"text": "sentence_transformers"}',
    show_default=True,
    help="JSON: field name -> encoder name or {encoder, modality, params...}.",
)
@click.option("--options", default="{}", help="JSON: plugin options of the collection.")
@errors
def init(path: Path, collection: str, fields: str, options: str) -> None:
    """Create (or open) the store at PATH and a COLLECTION in it."""
    with open_store(path) as store:
        col = store.create_collection(
            collection,
            encoders=json_arg("--fields", fields),
            options=json_arg("--options", options),
        )
        click.echo(f"{path}: collection {col.name!r} with fields {sorted(col.fields)}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def verify(path: Path, as_json: bool) -> None:
    """Check that every index agrees with the catalog; exit code 1 if one does not."""
    with open_store(path, read_only=True) as store:
        report = {name: store.collection(name).verify() for name in store.collections()}
    ok = all(f["ok"] for fields in report.values() for f in fields)
    if as_json:
        click.echo(json.dumps({"ok": ok, "collections": report}, indent=2))
    else:
        for name, fields in report.items():
            for f in fields:
                click.echo(
                    f"{'ok ' if f['ok'] else 'BAD'} {name}.{f['field']}: "
                    f"{f['catalog_vectors']} in catalog, {f['index_vectors']} in index, "
                    f"{f['missing_from_index']} missing, {f['not_in_catalog']} extra; "
                    f"file {f['file']}; vectors {f['vectors']}"
                )
    if not ok:
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def encoders(as_json: bool) -> None:
    """List the encoders: plugin, version, modalities and parameters with their defaults."""
    host = PluginHost()
    rows = [_encoder_row(host, name) for name in sorted(host.encoders)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        click.echo(f"{r['name']:<22} v{r['version']:<4} {'/'.join(r['modalities']):<18} {params}")
        click.echo(f"{'':<22} from {r['plugin']}{' (fitted)' if r['fitted'] else ''}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def modalities(as_json: bool) -> None:
    """List the modalities: plugin, the file suffixes they take, and their options (set per
    collection as options={"<modality>": {...}}) with their defaults."""
    host = PluginHost()
    rows = [_modality_row(host, name) for name in sorted(host.modalities)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        options = ", ".join(f"{k}={v!r}" for k, v in r["options"].items()) or "(no options)"
        click.echo(f"{r['name']:<12} {' '.join(r['suffixes']) or '-':<28} {options}")
        click.echo(f"{'':<12} from {r['plugin']}")


def _modality_row(host: PluginHost, name: str) -> dict[str, Any]:
    cls = host.modalities[name]
    return {
        "name": name,
        "plugin": host.owner("modality", name),
        "suffixes": list(cls.suffixes),
        "options": option_defaults(cls.Options),
    }


def _encoder_row(host: PluginHost, name: str) -> dict[str, Any]:
    """One encoder's description: parameters as ``name -> default`` (``required`` if none)."""
    cls = host.encoders[name]
    params = option_defaults(cls.Params)
    return {
        "name": name,
        "plugin": host.owner("encoder", name),
        "version": cls.version,
        "modalities": list(cls.modalities),
        "fitted": cls.fitted,
        "params": params,
    }


@cli.command("migrate")
@click.argument("path", type=click.Path(path_type=Path))
@errors
def migrate_cmd(path: Path) -> None:
    """Upgrade the catalog schema of the store at PATH to the newest revision."""
    if not (path / CATALOG_FILE).is_file():
        raise FileNotFoundError(f"no store at {str(path)!r}")
    catalog = Catalog(path / CATALOG_FILE)
    try:
        before = migrate.upgrade(catalog.conn, catalog.segments)
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
@service_options
@errors
def collections(path: Path, as_json: bool, url: str | None, key: str | None) -> None:
    """List the collections of the store at PATH."""
    with where(path, write=False, url=url, key=key) as found:
        names = found.collections()
    click.echo(json.dumps(names) if as_json else "\n".join(names))


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@service_options
@errors
def info(path: Path, collection: str, as_json: bool, url: str | None, key: str | None) -> None:
    """Counts, fields, encoders, spaces, index kinds and index file sizes of a collection."""
    with find_collection(path, collection, write=False, url=url, key=key) as col:
        data = col.info()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"{data['name']}: {data['records']} records")
    for f in data["fields"]:
        click.echo(
            f"  {f['field']:<12} {f['modality']:<8} {f['encoder']} v{f['encoder_version']}"
            f" dim={f['dim']} vectors={f['vectors']} space={f['space']}"
        )
        ix = f["index"]
        click.echo(
            f"  {'':<12} index {ix['kind']}: {ix['live']} live of {ix['size']}, "
            f"{ix['index_file_bytes']:,} bytes on disk"
        )
    for m in data.get("missing", []):
        click.echo(f"  {m['field']:<12} {m['modality']:<8} {m['encoder']}: not usable here")
        click.echo(f"  {'':<12} {m['missing']}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.argument("field")
@click.option("--encoder", default=None, help="JSON: the field's new encoder configuration.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--skip-bad", is_flag=True, help="Switch even if some records cannot be re-embedded.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@errors
def reembed(
    path: Path,
    collection: str,
    field: str,
    encoder: str | None,
    batch_size: int,
    skip_bad: bool,
    progress: bool,
) -> None:
    """Fill FIELD's configured encoder space from the stored sources and switch to it.
    Interrupted, it resumes where it stopped; until the switch searches use the old space."""
    with open_store(path) as store:
        report = store.collection(collection).reembed(
            field,
            encoder=json_arg("--encoder", encoder) if encoder else None,
            batch_size=batch_size,
            on_error="skip" if skip_bad else "raise",
            progress=progress,
        )
    click.echo(str(report))
    for r in report.rejected:
        click.echo(f"  rejected {r.id} ({r.field}): {r.reason}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def spaces(path: Path, collection: str, as_json: bool) -> None:
    """Each field's embedding space, any pending re-embedding, and how many stored vectors
    each encoder identity wrote."""
    with open_store(path, read_only=True) as store:
        data = store.collection(collection).spaces()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for f in data:
        click.echo(
            f"{f['field']:<12} {f['modality']:<8} {f['encoder']} v{f['encoder_version']} "
            f"[{f['state']}] space={f['space']}"
        )
        for v in f["vectors_by_encoder"]:
            by = f"{v['encoder']} v{v['version']} ({v['encoder_key']})"
            click.echo(f"    {v['vectors']:>9} vectors by {by}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def gc(path: Path, dry_run: bool, as_json: bool) -> None:
    """Delete stored media that no record refers to any more."""
    with open_store(path) as store:
        counts = store.collect_media(dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(counts))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {counts['removed']} blobs ({counts['bytes_freed']:,} bytes); kept {counts['kept']}"
    )


for _module in (cli_records, cli_heads, cli_keys, cli_service):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


if __name__ == "__main__":
    main()
