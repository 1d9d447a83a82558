"""The state of one open collection that its services share (ingest, reembed, search,
datasets, heads): configuration, fields and the encoder serving each, indexes, hit cache,
and the handles of the store that holds it. The services take this, not the Collection."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from mmstore.config import CollectionConfig, CollectionContext
from mmstore.encoding.fields import Field, active_field, build_field, stored_identity, stored_keys
from mmstore.encoding.fitted import load_states
from mmstore.encoding.missing import MissingField
from mmstore.errors import EncoderChangedError, MMStoreError, UnknownNameError
from mmstore.index.collection import CollectionIndexes
from mmstore.index.hitcache import HitCache
from mmstore.plugin.encoder import EncoderIdentity
from mmstore.plugin.events import Event
from mmstore.plugin.manager import PluginHost
from mmstore.storage.catalog import Catalog
from mmstore.storage.media import MediaStore


@dataclass(frozen=True)
class StoreHandles:
    """What a collection's services use of the store that holds it."""

    path: Path
    catalog: Catalog
    plugins: PluginHost
    media: MediaStore
    track: Callable[[Event], None]
    check_open: Callable[[], None]


class CollectionState:
    """One collection's fields, indexes and cache over its store's handles."""

    def __init__(self, store: StoreHandles, name: str, config: CollectionConfig) -> None:
        self.store, self.name, self.config = store, name, config
        self.fields, self.missing = self._build(config)
        self.context = CollectionContext(
            name,
            MappingProxyType({n: f.modality.name for n, f in self.fields.items()}),
            MappingProxyType(config.options),
        )
        self.indexes = CollectionIndexes(
            store.catalog, store.path / "indexes" / name, name, config.index, store.track
        )
        self.cache = HitCache(store.catalog, name)
        self.active: dict[str, Field] = {}
        self.refresh_active()

    def __repr__(self) -> str:
        return f"<CollectionState {self.name!r} fields={sorted(self.fields)}>"

    def _build(self, config: CollectionConfig) -> tuple[dict[str, Field], dict[str, MissingField]]:
        """The fields that can be built here, and those whose plugin is missing (a field of
        a new collection that cannot be built is an error of its configuration)."""
        fields: dict[str, Field] = {}
        missing: dict[str, MissingField] = {}
        keys: dict[str, str] | None = None
        idents: dict[str, EncoderIdentity | None] = {}
        for name, spec in config.fields.items():
            try:
                fields[name] = build_field(
                    name, spec, self.store.plugins, self.store.media, config.options
                )
            except UnknownNameError as e:
                if e.kind not in ("encoder", "modality"):
                    raise
                if keys is None:
                    with self.store.catalog.reading() as conn:
                        keys = stored_keys(conn, self.name)
                        idents = {k: stored_identity(conn, v) for k, v in keys.items()}
                if name not in keys:
                    raise
                missing[name] = MissingField(
                    self.name, name, spec.modality, spec.encoder, idents[name], str(e)
                )
        return fields, missing

    def no_field(self, name: str, among: Iterable[str], hint: str = "") -> MMStoreError:
        """The error for a field ``name`` that cannot be used: its plugin is missing, or
        there is no such field (``among`` lists those there are)."""
        if name in self.missing:
            return self.missing[name].error()
        return UnknownNameError("field", name, among, hint=hint)

    def refresh_active(self) -> None:
        """Read which encoder identity serves each field (the catalog's active key) and
        load fitted encoder states; a field whose configured encoder differs keeps
        serving its stored space until a re-embedding switches it."""
        plugins, media = self.store.plugins, self.store.media
        with self.store.catalog.reading() as conn:
            keys = stored_keys(conn, self.name)
            self.active = {
                n: active_field(conn, f, keys.get(n, f.key), plugins, media, self._serving(n, keys))
                for n, f in self.fields.items()
            }
            load_states(conn, self.name, [*self.fields.values(), *self.active.values()])

    def _serving(self, name: str, keys: dict[str, str]) -> Field | None:
        """The field built from the configuration kept for its serving space, if any."""
        spec = self.config.serving.get(name)
        if spec is None or keys.get(name) == self.fields[name].key:
            return None
        try:
            return build_field(
                name, spec, self.store.plugins, self.store.media, self.config.options
            )
        except MMStoreError:  # its plugin changed too: rebuilt from the identity, or retired
            return None

    def pending(self, name: str) -> bool:
        """Whether the field's configured encoder differs from the one serving it."""
        return self.active[name].key != self.fields[name].key

    def check_current(self, name: str) -> None:
        """Refuse to write vectors of a new encoder identity beside the stored ones."""
        if not self.pending(name):
            return
        new, old = self.fields[name].identity, self.active[name].identity
        raise EncoderChangedError(
            f"field {name!r} of collection {self.name!r} holds vectors of encoder "
            f"{old.name!r} version {old.version} (identity {old.key}), but its configured "
            f"encoder {new.name!r} (version {new.version}, plugin {new.plugin} "
            f"{new.plugin_version}) gives identity {new.key}; run col.reembed({name!r}) "
            f"(or `mmstore reembed STORE {self.name} {name}`) to fill the new space from the "
            "stored sources; until it switches, searches use the stored space"
        )
