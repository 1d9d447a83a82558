"""Fields whose plugin is not installed here: what wrote their vectors (from the catalog),
what to install, and the error that says so. The collection opens with its other fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmstore.errors import MissingPluginError
from mmstore.plugin.encoder import EncoderIdentity


@dataclass(frozen=True)
class MissingField:
    """A configured field that cannot be built: its encoder or modality is unknown here."""

    collection: str
    name: str
    modality: str
    encoder: str
    identity: EncoderIdentity | None  # what wrote its vectors, as the catalog recorded it
    reason: str  # why it could not be built (the unknown name, and what is available)

    @property
    def install(self) -> str:
        """What to install, named from the catalog's record of the plugin."""
        i = self.identity
        if i is None:
            return f"{self.reason}; install the plugin that provides encoder {self.encoder!r}"
        return (
            f"its vectors were written by encoder {i.name!r} version {i.version} of plugin "
            f"{i.plugin!r} {i.plugin_version}, which is not installed here ({self.reason}); "
            f"install plugin {i.plugin!r} {i.plugin_version} (the package with an entry point "
            f"{i.plugin!r} in group 'mmstore') and reopen the store"
        )

    def error(self) -> MissingPluginError:
        return MissingPluginError(self.collection, self.name, self.install)

    def describe(self) -> dict[str, Any]:
        """The field as ``info()`` lists it, with ``missing`` saying what to install."""
        i = self.identity
        return {
            "field": self.name,
            "modality": self.modality,
            "encoder": self.encoder,
            "encoder_version": i.version if i else None,
            "plugin": i.plugin if i else None,
            "plugin_version": i.plugin_version if i else None,
            "missing": self.install,
        }
