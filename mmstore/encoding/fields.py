"""A collection's fields at run time: each field's modality and encoder instances, the
encoder's identity, and the catalog rows that record them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mmstore.config import CollectionConfig, FieldSpec
from mmstore.errors import ConfigError, EncoderChangedError, MMStoreError, UnknownNameError
from mmstore.plugin.encoder import Encoder, EncoderIdentity, EncoderParams, Metric, canonical_json
from mmstore.plugin.manager import PluginHost
from mmstore.plugin.modality import Modality
from mmstore.storage import schema
from mmstore.storage.media import MediaStore


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


def build_fields(
    config: CollectionConfig, plugins: PluginHost, media: MediaStore | None = None
) -> dict[str, Field]:
    """Instantiate each field's modality and encoder from the registries."""
    return {
        name: build_field(name, spec, plugins, media, config.options)
        for name, spec in config.fields.items()
    }


def build_field(
    name: str,
    spec: FieldSpec,
    plugins: PluginHost,
    media: MediaStore | None,
    options: dict[str, dict[str, Any]],
) -> Field:
    """One field: its modality (with the collection's and the field's options) and encoder."""
    if spec.modality not in plugins.modalities and spec.modality == name:
        raise UnknownNameError(
            "modality", name, plugins.modalities, _modality_hint(name, spec, plugins)
        )
    modality = build_modality(spec.modality, plugins, media, options, spec.modality_options)
    encoder_cls = plugins.encoder_class(spec.encoder)
    if spec.modality not in encoder_cls.modalities:
        raise ConfigError(
            f"field {name!r}: encoder {spec.encoder!r} encodes {list(encoder_cls.modalities)}, "
            f"not {spec.modality!r}; pick an encoder for {spec.modality!r} (mmstore plugins)"
        )
    encoder = encoder_cls(**spec.params)
    return Field(name, modality, encoder, identify(encoder, plugins, name))


def _modality_hint(name: str, spec: FieldSpec, plugins: PluginHost) -> str:
    """A field whose modality came from its name: say how to give one."""
    takes = plugins.encoders.get(spec.encoder)
    choices = list(takes.modalities) if takes is not None else sorted(plugins.modalities)
    return (
        f"Field {name!r} takes its modality from its name unless one is given: write "
        f'{{"encoder": "{spec.encoder}", "modality": "{choices[0]}"}}'
        + (f" (encoder {spec.encoder!r} encodes {choices})" if takes is not None else "")
    )


def build_modality(
    name: str,
    plugins: PluginHost,
    media: MediaStore | None,
    options: dict[str, dict[str, Any]],
    overrides: dict[str, Any] | None = None,
) -> Modality:
    """A modality instance with the collection's ``options[name]`` and a field's overrides."""
    merged = dict(options.get(name, {})) | dict(overrides or {})
    return plugins.modality_class(name)(media=media, **merged)


def identify(encoder: Encoder, plugins: PluginHost, field: str) -> EncoderIdentity:
    """The identity of an encoder instance: what its vectors are, and who made them. A
    fitted encoder's space is its field's own: two fields with equal parameters fit
    different statistics, so their vectors are not comparable."""
    cls = type(encoder)
    space = encoder.space() + (f"#{field}" if encoder.fitted else "")
    owner = plugins.owner("encoder", cls.name)
    return EncoderIdentity(
        name=cls.name,
        version=cls.version,
        params=encoder.identity_params(),
        plugin=owner,
        plugin_version=plugins.version_of(owner),
        dim=encoder.dim,
        metric=encoder.metric,
        space=space,
    )


def record_fields(conn: Connection, collection: str, fields: Mapping[str, Field]) -> None:
    """Write the encoder identities and the field rows of a new collection."""
    for f in fields.values():
        record_identity(conn, f.identity)
        conn.execute(
            schema.fields.insert().values(
                collection=collection, field=f.name, modality=f.modality.name, encoder_key=f.key
            )
        )


def record_identity(conn: Connection, ident: EncoderIdentity) -> None:
    """Write an encoder identity row once; vectors refer to it by key."""
    exists = conn.execute(
        sa.select(schema.encoders.c.key).where(schema.encoders.c.key == ident.key)
    ).all()
    if exists:
        return
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
            created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
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


class RetiredEncoder(Encoder):
    """Stands in for the encoder that wrote a field's active space when that encoder can no
    longer be built (its plugin now gives another version): the stored vectors stay
    searchable by ``record=`` and ``vector=``, but no new value can be encoded into them."""

    name = "retired"
    modalities = ()

    def __init__(self, identity: EncoderIdentity) -> None:
        self.identity = identity
        self.params = EncoderParams()

    @property
    def dim(self) -> int:
        return self.identity.dim

    @property
    def metric(self) -> Metric:
        return "ip" if self.identity.metric == "ip" else "cosine"

    def space(self) -> str:
        return self.identity.space

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        ident = self.identity
        raise EncoderChangedError(
            f"the vectors this field serves were written by encoder {ident.name!r} version "
            f"{ident.version} (plugin {ident.plugin} {ident.plugin_version}), which is no "
            "longer installed, so a query value cannot be encoded into their space; search "
            "with record= or vector=, or finish col.reembed(...) to switch to the new encoder"
        )


def active_field(
    conn: Connection,
    current: Field,
    key: str,
    plugins: PluginHost,
    media: MediaStore | None,
    serving: Field | None = None,
) -> Field:
    """The field as it serves searches: ``current`` when the catalog's active encoder key is
    its own; else ``serving`` (built from the configuration kept while a re-embedding is
    pending) when it has that key; else the encoder that wrote the active space, rebuilt
    from its identity row when its plugin still builds it identically, or a
    :class:`RetiredEncoder`."""
    if key == current.key:
        return current
    if serving is not None and serving.key == key:
        return serving
    identity = stored_identity(conn, key)
    if identity is None:
        raise ConfigError(f"field {current.name!r}: encoder identity {key} is not in the catalog")
    modality = current.modality
    try:
        cls = plugins.encoder_class(identity.name)
        if cls.version == identity.version:
            encoder = cls(**identity.params)
            rebuilt = identify(encoder, plugins, current.name)
            if rebuilt.key == key:
                return Field(current.name, modality, encoder, rebuilt)
    except MMStoreError:
        pass
    return Field(current.name, modality, RetiredEncoder(identity), identity)


def stored_identity(conn: Connection, key: str) -> EncoderIdentity | None:
    """The encoder identity the catalog recorded under ``key``, if it did."""
    rows = conn.execute(sa.select(schema.encoders).where(schema.encoders.c.key == key)).all()
    if not rows:
        return None
    row = rows[0]
    return EncoderIdentity(
        name=row.name,
        version=row.version,
        params=json.loads(row.params),
        plugin=row.plugin,
        plugin_version=row.plugin_version,
        dim=row.dim,
        metric=row.metric,
        space=row.space,
    )
