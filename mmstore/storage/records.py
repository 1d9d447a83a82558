"""Reads, counts and deletes of the record rows (``mms_records``) as a collection serves
them; ingest writes them in bulk (:mod:`mmstore.ingest.writes`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mmstore.errors import NotFoundError
from mmstore.storage import schema
from mmstore.storage.filters import compile_filter


def by_id(conn: Connection, collection: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored records among ``ids``, as the dicts ``Collection.get`` returns."""
    t = schema.records
    rows = conn.execute(sa.select(t).where(t.c.collection == collection, t.c.id.in_(ids))).all()
    return {r.id: record_dict(r) for r in rows}


def require(conn: Connection, collection: str, ids: list[str]) -> list[dict[str, Any]]:
    """The records ``ids``, in the order asked; raises NotFoundError naming missing ids."""
    found = by_id(conn, collection, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFoundError(
            f"collection {collection!r} has no record with id "
            f"{', '.join(map(repr, missing[:10]))}"
            + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        )
    return [found[i] for i in ids]


def count(conn: Connection, collection: str, where: Mapping[str, Any] | None) -> int:
    """How many records of the collection match ``where`` (all of them for None)."""
    t = schema.records
    query = sa.select(sa.func.count()).select_from(t)
    return int(
        conn.execute(
            query.where(t.c.collection == collection, compile_filter(where, t))
        ).scalar_one()
    )


def delete_listed(conn: Connection, collection: str, table: str) -> list[str]:
    """Delete the records whose ids are in the temporary ``table``; the ids that went."""
    rows = conn.exec_driver_sql(
        f"DELETE FROM mms_records WHERE collection = ? AND id IN (SELECT id FROM {table}) "
        "RETURNING id",
        (collection,),
    ).fetchall()
    return [r[0] for r in rows]


def record_dict(row: sa.Row) -> dict[str, Any]:
    """A record row as a user sees it: id, the sources by field, label, ts and meta."""
    out: dict[str, Any] = {"id": row.id}
    out.update({k: v for k, v in json.loads(row.sources).items() if v is not None})
    if row.label is not None:
        out["label"] = row.label
    if row.ts is not None:
        out["ts"] = row.ts
    if row.meta is not None:
        out["meta"] = json.loads(row.meta)
    return out
