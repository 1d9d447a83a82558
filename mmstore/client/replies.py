"""What the service answers, read back as the embedded store's own types: ingest and head
reports, hits, stored records with datetimes, and errors of the class named in the body."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmstore import errors
from mmstore.api import HeadReport, IngestReport, Rejected
from mmstore.hits import Hit


def ingest_report(data: Mapping[str, Any]) -> IngestReport:
    rejected = [Rejected(r["id"], r.get("field"), r["reason"]) for r in data["rejected"]]
    counts = {k: int(data[k]) for k in ("received", "written", "unchanged", "encoded")}
    return IngestReport(
        int(data["run_id"]), rejected=rejected, seconds=float(data["seconds"]), **counts
    )


def head_report(data: Mapping[str, Any]) -> HeadReport:
    return HeadReport(
        name=data["name"],
        kind=data["kind"],
        path=Path(data["path"]),
        classes=list(data["classes"]),
        metrics=dict(data["metrics"]),
        history=list(data.get("history") or []),
        best_epoch=int(data["best_epoch"]),
        split_rows=dict(data["split_rows"]),
        excluded=dict(data["excluded"]),
        files={k: Path(v) for k, v in (data.get("files") or {}).items()},
    )


def when(value: Any) -> Any:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def hit(data: Mapping[str, Any]) -> Hit:
    return Hit(
        id=data["id"],
        score=float(data["score"]),
        field=data["field"],
        modality=data["modality"],
        label=data.get("label"),
        ts=when(data.get("ts")),
        meta=dict(data.get("meta") or {}),
        values=dict(data.get("values") or {}),
    )


def record_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as ``col.get`` gives it: its timestamp a datetime again."""
    out = dict(row)
    if "ts" in out:
        out["ts"] = when(out["ts"])
    return out


def error(response: Any) -> errors.MMStoreError:
    """The exception the embedded store would have raised, from the service's error body."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") if isinstance(body.get("detail"), dict) else body
    error = raised(detail or {"message": response.text}, f"HTTP {response.status_code}")
    error.status = response.status_code  # type: ignore[attr-defined]
    return error


def raised(detail: Mapping[str, Any], where: str) -> errors.MMStoreError:
    """An error body (``error``, ``message``, ``kind``, ``record``, ``field``) as the
    exception of its class, its message ending with ``where`` it came from."""
    cls = errors.named(str(detail.get("error") or ""), detail.get("kind"))
    error = cls.remote(f"{detail.get('message') or detail} ({where})")
    for attr, key in (("record_id", "record"), ("field", "field"), ("problem", "problem")):
        if key in detail:
            setattr(error, attr, detail[key])
    return error
