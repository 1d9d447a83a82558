"""A collection's fields at run time: each field's modality and encoder instances, the
encoder's identity, and the catalog rows that record them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mmstore import schema
from mmstore.config import CollectionConfig
from mmstore.encoders import Encoder, EncoderIdentity, canonical_json
from mmstore.errors import ConfigError
from mmstore.modalities import Modality
from mmstore.plugins import PluginHost


@dataclass(frozen=True)
class Field:
    """One field: what it holds and what embeds it."""

    name: str
    modality: Modality
    encoder: Encoder
    identity: EncoderIdentity

    @property
    def key(self) -> str:
        return self.identity.key


def build_fields(config: CollectionConfig, plugins: PluginHost) -> dict[str, Field]:
    """Instantiate each field's modality and encoder from the registries."""
    out = {}
    for name, spec in config.fields.items():
        modality = plugins.modality_class(spec.modality)()
        encoder_cls = plugins.encoder_class(spec.encoder)
        if spec.modality not in encoder_cls.modalities:
            raise ConfigError(
                f"field {name!r}: encoder {spec.encoder!r} encodes {list(encoder_cls.modalities)}, "
                f"not {spec.modality!r}; pick an encoder for {spec.modality!r} (mmstore plugins)"
            )
        encoder = encoder_cls(**spec.params)
        owner = plugins.owner("encoder", encoder_cls.name)
        identity = EncoderIdentity(
            name=encoder_cls.name,
            version=encoder_cls.version,
            params=encoder.identity_params(),
            plugin=owner,
            plugin_version=plugins.version_of(owner),
            dim=encoder.dim,
            metric=encoder.metric,
            space=encoder.space(),
        )
        out[name] = Field(name, modality, encoder, identity)
    return out


def record_fields(conn: Connection, collection: str, fields: dict[str, Field]) -> None:
    """Write the encoder identities and the field rows of a new collection."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for f in fields.values():
        ident = f.identity
        exists = conn.execute(
            sa.select(schema.encoders.c.key).where(schema.encoders.c.key == ident.key)
        ).all()
        if not exists:
            conn.execute(
                schema.encoders.insert().values(
                    key=ident.key,
                    name=ident.name,
                    version=ident.version,
                    params=canonical_json(ident.params),
                    plugin=ident.plugin,
                    plugin_version=ident.plugin_version,
                    dim=ident.dim,
                    metric=ident.metric,
                    space=ident.space,
                    created_at=now,
                )
            )
        conn.execute(
            schema.fields.insert().values(
                collection=collection, field=f.name, modality=f.modality.name, encoder_key=ident.key
            )
        )


def stored_keys(conn: Connection, collection: str) -> dict[str, str]:
    """Each field's encoder identity as the catalog recorded it."""
    rows = conn.execute(
        sa.select(schema.fields.c.field, schema.fields.c.encoder_key).where(
            schema.fields.c.collection == collection
        )
    )
    return {r.field: r.encoder_key for r in rows}


def describe(f: Field) -> dict[str, object]:
    """A JSON-able description of a field, for ``info`` and ``spaces``."""
    ident = f.identity
    return {
        "field": f.name,
        "modality": f.modality.name,
        "encoder": ident.name,
        "encoder_version": ident.version,
        "params": json.loads(canonical_json(ident.params)),
        "plugin": ident.plugin,
        "plugin_version": ident.plugin_version,
        "dim": ident.dim,
        "metric": ident.metric,
        "space": ident.space,
        "encoder_key": ident.key,
    }
