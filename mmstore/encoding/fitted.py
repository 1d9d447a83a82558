"""Fitted encoder state: statistics an encoder fits once per field (tabular means, scales,
vocabularies), kept in the catalog so that every later ingest and query uses the same."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mmstore.encoding.fields import Field
from mmstore.errors import EncoderError
from mmstore.plugin.encoder import canonical_json
from mmstore.storage import schema


def load_states(conn: Connection, collection: str, fields: list[Field]) -> None:
    """Give each fitted encoder the state stored for its field and identity, if any."""
    t = schema.encoder_states
    wanted = [f for f in fields if f.encoder.fitted]
    if not wanted:
        return
    rows = conn.execute(sa.select(t).where(t.c.collection == collection)).all()
    stored = {(r.field, r.encoder_key): r.state for r in rows}
    for f in wanted:
        state = stored.get((f.name, f.key))
        f.encoder.load_state(None if state is None else json.loads(state))


def ensure_fitted(conn: Connection, collection: str, f: Field, items: list[Any]) -> bool:
    """Fit the field's encoder on ``items`` if it has no state yet, and store the state in
    the caller's transaction. Returns whether it fitted (the caller forgets the state again
    if the transaction fails)."""
    if not f.encoder.fitted or f.encoder.state is not None:
        return False
    state = f.encoder.fit(items, f.modality.name)
    try:
        text = canonical_json(state)
        json.loads(text)
    except (TypeError, ValueError) as e:
        raise EncoderError(
            f.identity.plugin, f"encoder {f.identity.name!r} fitted a state that is not JSON: {e}"
        ) from e
    conn.execute(
        schema.encoder_states.insert().values(
            collection=collection,
            field=f.name,
            encoder_key=f.key,
            state=text,
            created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        )
    )
    f.encoder.load_state(json.loads(text))
    return True


def states(conn: Connection, collection: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every stored state of a collection, by (field, encoder key)."""
    t = schema.encoder_states
    rows = conn.execute(sa.select(t).where(t.c.collection == collection)).all()
    return {(r.field, r.encoder_key): json.loads(r.state) for r in rows}
