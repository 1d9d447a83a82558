"""Command-line verbs for records: ``mmstore ingest`` (record files, or a folder of media
files with a sidecar: :mod:`mmstore.ingest.folders`) and ``mmstore search``. Added to the
``mmstore`` group by :mod:`mmstore.cli.main` (``COMMANDS``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from mmstore.api import CollectionAPI
from mmstore.cli.common import errors, json_arg
from mmstore.cli.preview import preview
from mmstore.cli.target import collection as find_collection
from mmstore.cli.target import modalities, service_options
from mmstore.collection import Collection
from mmstore.errors import InvalidInputError, RecordError
from mmstore.ingest.report import IngestReport, OnError


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@click.option("--skip-bad", is_flag=True, help="Leave bad records out and list them.")
@click.option(
    "--field", default=None, help="Folder: the field the files fill (default: by suffix)."
)
@click.option(
    "--sidecar",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Folder: a .csv/.jsonl/.parquet of id, label, ts, other fields and metadata.",
)
@click.option(
    "--chunk-size", type=int, default=None, help="Records per batch [4096; 256 for a folder]."
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where to encode: here, or on Ray encoder actors (docs/distributed.md).",
)
@click.option("--address", default=None, help="Ray: the cluster to join [a new local one].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@service_options
@errors
def ingest(
    path: Path,
    collection: str,
    source: Path,
    skip_bad: bool,
    field: str | None,
    sidecar: Path | None,
    chunk_size: int | None,
    progress: bool,
    engine: str,
    address: str | None,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Ingest SOURCE into COLLECTION: a .jsonl, .csv or .parquet file of records, or a
    folder of image or audio files (one record per file, its id the relative path without
    the suffix) with an optional --sidecar. Nothing is written when a record is bad, unless
    --skip-bad."""
    from mmstore.ingest.files import LineNumbers, read_records
    from mmstore.ingest.folders import folder_records

    problems: list[str] | None = [] if skip_bad else None
    lines = LineNumbers(source)  # names records by line (JSON Lines only)
    ignored = 0
    with find_collection(path, collection, write=True, url=url, key=key) as col:
        if source.is_dir():
            scan, records = folder_records(
                source, _local(col, "a folder").fields, only=field, sidecar=sidecar,
                problems=problems,
            )  # fmt: skip
            ignored, chunk_size = scan.ignored, chunk_size or 256
        elif field or sidecar:
            raise InvalidInputError("--field and --sidecar go with a folder of files")
        else:
            records = read_records(source, problems, lines, modalities(col))
        on_error: OnError = "skip" if skip_bad else "raise"
        run = {"progress": progress, "chunk_size": chunk_size or 4096, "engine": engine}
        try:
            report = _run_ingest(col, records, on_error, run | {"address": address})
        except RecordError as e:
            where = lines.where(e.record_id, e.field)
            if where == e.record_id:
                raise
            raise RecordError(where, e.field, e.problem) from e  # named by its line
    rejected = [f"{lines.where(r.id, r.field)} ({r.field}): {r.reason}" for r in report.rejected]
    rejected += problems or []
    if as_json:
        keys = ("run_id", "received", "written", "unchanged", "encoded")
        out = {k: getattr(report, k) for k in keys}
        click.echo(json.dumps(out | {"rejected": rejected, "ignored": ignored}))
        return
    click.echo(str(report) + (f"; {ignored} files ignored" if ignored else ""))
    for line in rejected:
        click.echo(f"  rejected {line}")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.option("--text", help="Text to search with.")
@click.option(
    "--image", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="Image file."
)
@click.option(
    "--audio", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="Audio file."
)
@click.option("--record", "record_id", help="Search with a stored record (itself excluded).")
@click.option("--target", help="The field to search.")
@click.option("--head", help="A retrieval head to search through (query field -> target).")
@click.option("--show", help="The field whose value each hit line shows (default: the text).")
@click.option("-k", default=10, show_default=True)
@click.option("--where", default=None, help='JSON filter, e.g. \'{"label": "x"}\'.')
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@service_options
@errors
def search(
    path: Path,
    collection: str,
    text: str | None,
    image: Path | None,
    audio: Path | None,
    record_id: str | None,
    target: str | None,
    head: str | None,
    show: str | None,
    k: int,
    where: str | None,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Search COLLECTION with text, an image or audio file, or a stored record; several
    at once fuse by reciprocal rank."""
    values: dict[str, Any] = {"text": text} if text is not None else {}
    if image is not None:
        values["image"] = image.read_bytes()
    if audio is not None:
        values["audio"] = audio.read_bytes()
    with find_collection(path, collection, write=False, url=url, key=key) as col:
        hits = col.search(
            target=target,
            k=k,
            record=record_id,
            where=json_arg("--where", where) if where else None,
            head=head,
            **values,
        )
    if as_json:
        click.echo(json.dumps([asdict(h) for h in hits], default=str))
        return
    for h in hits:
        click.echo(f"{h.score:.4f}  {h.id}  {preview(h, show)}")


def _run_ingest(
    col: CollectionAPI, records: Any, on_error: OnError, run: dict[str, Any]
) -> IngestReport:
    """Ingest beside the store with the run options, or through the service."""
    if run["engine"] != "local" or isinstance(col, Collection):
        return _local(col, f"--engine {run['engine']}").ingest(records, on_error=on_error, **run)
    return col.ingest(records, on_error=on_error)


def _local(col: CollectionAPI, what: str) -> Collection:
    """The collection itself, for what only runs beside the store (not over HTTP)."""
    if not isinstance(col, Collection):
        raise InvalidInputError(
            f"{what} is ingested beside the store, not through the service that holds it; "
            "stop the service, or ingest a .jsonl, .csv or .parquet file of records"
        )
    return col


#: the commands this module adds to the ``mmstore`` group
COMMANDS = [ingest, search]
