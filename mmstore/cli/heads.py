"""Command-line verbs for heads: ``mmstore train``, ``mmstore predict``, ``mmstore heads``.
Added to the ``mmstore`` group by :mod:`mmstore.cli.main` (``COMMANDS``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mmstore.cli.common import errors, json_arg
from mmstore.cli.target import collection as find_collection
from mmstore.cli.target import modalities, service_options
from mmstore.errors import InvalidInputError


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.argument("name")
@click.option("--kind", default="classifier", show_default=True)
@click.option("--inputs", default=None, help="Classifier: comma-separated input fields.")
@click.option("--label", default=None, help="Classifier: the label (default: label).")
@click.option("--fusion", default=None, help="Classifier: concat, mean or attention.")
@click.option("--query", default=None, help="Retrieval: the query field.")
@click.option("--target", default=None, help="Retrieval: the target field.")
@click.option("--options", default="{}", help="JSON: more options, e.g. '{\"epochs\": 50}'.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@service_options
@errors
def train(
    path: Path,
    collection: str,
    name: str,
    kind: str,
    inputs: str | None,
    label: str | None,
    fusion: str | None,
    query: str | None,
    target: str | None,
    options: str,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Train head NAME on COLLECTION's stored embeddings and save it in the store."""
    extra = json_arg("--options", options)
    if not isinstance(extra, dict):
        raise InvalidInputError("--options must be a JSON object")
    if kind == "classifier":  # flags given win over --options
        extra |= {k: v for k, v in (("label", label), ("fusion", fusion)) if v is not None}
        if inputs:
            extra["inputs"] = [s.strip() for s in inputs.split(",") if s.strip()]
    else:
        extra |= {k: v for k, v in (("query", query), ("target", target)) if v is not None}
    with find_collection(path, collection, write=True, url=url, key=key) as col:
        report = col.train_head(name, kind, **extra)
    if as_json:
        click.echo(json.dumps({"name": report.name, "kind": report.kind,
                               "path": str(report.path), "metrics": report.metrics},
                              default=str))  # fmt: skip
        return
    click.echo(str(report))


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.argument("name")
@click.option("--ids", default=None, help="Comma-separated ids of stored records.")
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="New records (.jsonl, .csv or .parquet), encoded without being stored.",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Predict the records that can be; list the others with why (exit code 0).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@service_options
@errors
def predict(
    path: Path,
    collection: str,
    name: str,
    ids: str | None,
    file: Path | None,
    skip_bad: bool,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Predict with head NAME for stored records (--ids) or new ones (--file)."""
    bad_lines: list[str] | None = [] if skip_bad else None
    with find_collection(path, collection, write=False, url=url, key=key) as col:
        records = _predict_inputs(ids, file, bad_lines, modalities(col))
        for line in bad_lines or []:
            click.echo(f"skipped: {line}", err=True)
        out = col.predict(name, records, on_error="skip" if skip_bad else "raise")
    if as_json:
        click.echo(json.dumps(out, default=str))
        return
    for row in out:
        if row.get("error"):
            click.echo(f"{row['id']}\tskipped: {row['error']}")
            continue
        best = max(row["probabilities"].values()) if row.get("probabilities") else None
        click.echo(f"{row['id']}\t{row['label']}\t{best:.4f}" if best else f"{row['id']}")


def _predict_inputs(
    ids: str | None, file: Path | None, bad_lines: list[str] | None, modalities: dict[str, str]
) -> list[Any]:
    """Stored ids from ``--ids``, or the records of ``--file`` (unreadable JSON lines
    listed in ``bad_lines`` when it is given, else the first one raises)."""
    if (ids is None) == (file is None):
        raise InvalidInputError("give either --ids or --file")
    if ids is not None:
        return [s.strip() for s in ids.split(",") if s.strip()]
    from mmstore.ingest.files import read_records

    assert file is not None
    return list(read_records(file, bad_lines, None, modalities))


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("collection")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@service_options
@errors
def heads(path: Path, collection: str, as_json: bool, url: str | None, key: str | None) -> None:
    """List COLLECTION's heads with their metrics, and whether each is stale."""
    with find_collection(path, collection, write=False, url=url, key=key) as col:
        rows = col.heads()
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    for h in rows:
        state = f"STALE ({h.get('reason')})" if h.get("stale") else "current"
        click.echo(f"{h['name']:<20} {h['kind']:<11} {state:<10} {head_metrics(h)}")


def head_metrics(head: dict[str, Any]) -> str:
    """The test metrics that matter for the head's kind, in one line: a classifier's
    accuracy, macro-F1 and ROC-AUC; a retrieval head's recall@1/5/10 each way; with the
    test rows as a count."""
    m = head.get("metrics") or {}
    rows = f"{int(m['rows'])} test rows" if isinstance(m.get("rows"), int | float) else ""
    if head.get("kind") == "retrieval":
        ways = (("query_to_target", f"{head.get('query')}->{head.get('target')}"),
                ("target_to_query", f"{head.get('target')}->{head.get('query')}"))  # fmt: skip
        parts = [f"{label} R@1/5/10 {_recalls(m.get(way) or {})}" for way, label in ways]
    else:
        keys = ("accuracy", "macro_f1", "roc_auc")
        parts = [f"{k} {_number(m.get(k))}" for k in keys]
    return ", ".join([*parts, rows] if rows else parts)


def _recalls(way: dict[str, Any]) -> str:
    return "/".join(_number(way.get(f"recall@{k}")) for k in (1, 5, 10))


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


#: the commands this module adds to the ``mmstore`` group
COMMANDS = [train, predict, heads]
