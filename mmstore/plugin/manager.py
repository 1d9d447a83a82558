"""The plugin manager of one store: built-ins first, then the ``mmstore`` entry points, then
runtime registrations; and the registries (encoders, modalities) the hooks return."""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from mmstore.errors import DuplicateNameError, PluginError, UnknownNameError
from mmstore.plugin import defaults, hookspecs
from mmstore.plugin.encoder import Encoder
from mmstore.plugin.modality import Modality

log = logging.getLogger(__name__)

#: built-in plugins, registered under their entry point names before the entry points load
BUILTINS: tuple[tuple[str, str], ...] = (
    ("text", "mmstore_text"),
    ("vectors", "mmstore_vectors"),
    ("sentence_transformers", "mmstore_sbert"),
    ("pii", "mmstore_pii"),
    ("events_log", "mmstore_events"),
    ("image", "mmstore_image"),
    ("open_clip", "mmstore_openclip"),
    ("audio", "mmstore_audio"),
    ("tabular", "mmstore_tabular"),
)


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin, as ``mmstore plugins`` lists it."""

    name: str
    version: str
    source: str
    hooks: tuple[str, ...]


class PluginHost:
    """Owns one :class:`pluggy.PluginManager` and the registries built from its hooks."""

    def __init__(
        self,
        plugins: Iterable[Any] = (),
        *,
        entrypoints: bool = True,
        block: Iterable[str] = (),
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[str, str] = {}
        for name in block:
            self.pm.set_blocked(name)
        self._register(defaults, "mmstore.defaults", "core")
        for name, module in BUILTINS:
            if not self.pm.is_blocked(name):
                self._register(importlib.import_module(module), name, "builtin")
        if entrypoints:
            self.pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        for plugin in plugins:
            self._register(plugin, None, "runtime")
        for _, plugin in self.pm.list_name_plugin():
            if plugin is not None:
                check_hook_names(self.pm, plugin)
        self.encoders: dict[str, type[Encoder]] = {}
        self.modalities: dict[str, type[Modality]] = {}
        self._rebuild()

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin at runtime; a duplicate encoder or modality name is refused."""
        registered = self._register(plugin, name, "runtime")
        try:
            check_hook_names(self.pm, plugin)
            self._rebuild()
        except Exception:
            self.pm.unregister(plugin)
            self._rebuild()
            raise
        return registered

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._rebuild()

    def _register(self, plugin: Any, name: str | None, source: str) -> str:
        if name is None and source == "runtime":
            name = _readable_name(self.pm, plugin)
        registered = self.pm.register(plugin, name)
        if registered is None:
            raise PluginError(str(name), "is blocked and was not registered")
        self._sources[registered] = source
        return registered

    def _rebuild(self) -> None:
        self._owners: dict[tuple[str, str], str] = {}
        self.encoders = self._collect("encoder", "mmstore_register_encoders", Encoder)
        self.modalities = self._collect("modality", "mmstore_register_modalities", Modality)

    def _collect(self, kind: str, hook: str, base: type) -> dict[str, Any]:
        found: dict[str, tuple[str, Any]] = {}
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            for cls in _call_register(impl, kind):
                if not (inspect.isclass(cls) and issubclass(cls, base)):
                    raise PluginError(impl.plugin_name, f"returned {cls!r}, not a {kind} class")
                name = getattr(cls, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(impl.plugin_name, f"{kind} class {cls!r} has no `name`")
                if kind == "encoder":
                    _check_encoder_class(impl.plugin_name, cls)
                if name in found and found[name][1] is not cls:
                    raise DuplicateNameError(kind, name, found[name][0], impl.plugin_name)
                found[name] = (impl.plugin_name, cls)
        self._owners.update({(kind, n): p for n, (p, _) in found.items()})
        return {name: cls for name, (_, cls) in found.items()}

    def encoder_class(self, name: str) -> type[Encoder]:
        if name not in self.encoders:
            raise UnknownNameError("encoder", name, self.encoders, "See `mmstore plugins`.")
        return self.encoders[name]

    def modality_class(self, name: str) -> type[Modality]:
        if name not in self.modalities:
            raise UnknownNameError("modality", name, self.modalities, "See `mmstore plugins`.")
        return self.modalities[name]

    def owner(self, kind: str, name: str) -> str:
        """The plugin that registered an encoder or modality."""
        return self._owners[(kind, name)]

    def version_of(self, plugin_name: str) -> str:
        """The version of the distribution or module a plugin came from."""
        plugin = self.pm.get_plugin(plugin_name)
        for p, dist in self.pm.list_plugin_distinfo():
            if p is plugin:
                return str(dist.version)
        if self._sources.get(plugin_name) in ("core", "builtin"):
            from mmstore._version import __version__

            return __version__
        return str(getattr(plugin, "__version__", "unknown"))

    def infos(self) -> list[PluginInfo]:
        """Every registered plugin with its version, source and the hooks it implements."""
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # a blocked name
                continue
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            source = self._sources.get(name, "entrypoint")
            if source == "runtime" and any(p is plugin for p, _ in self.pm.list_plugin_distinfo()):
                source = "entrypoint"
            out.append(PluginInfo(name, self.version_of(name), source, hooks))
        return out


def _readable_name(pm: pluggy.PluginManager, plugin: Any) -> str | None:
    """A runtime plugin's name for messages: its module, or its class's dotted name (None,
    pluggy's numeric default, when that name is taken already)."""
    if inspect.ismodule(plugin):
        name = plugin.__name__
    else:
        cls = plugin if inspect.isclass(plugin) else type(plugin)
        name = f"{cls.__module__}.{cls.__qualname__}"
    return None if pm.has_plugin(name) or pm.is_blocked(name) else name


def _check_encoder_class(plugin: str, cls: type) -> None:
    """An encoder class declares the modalities it encodes, as a tuple of names."""
    declared = getattr(cls, "modalities", None)
    ok = (
        isinstance(declared, tuple | list)
        and declared
        and all(isinstance(m, str) for m in declared)
    )
    if not ok:
        misspelt = [a for a in vars(cls) if a.lower().startswith("modalit") and a != "modalities"]
        hint = f" (it has {misspelt[0]!r}: rename it `modalities`)" if misspelt else ""
        raise PluginError(
            plugin,
            f"encoder class {cls.__name__} ({getattr(cls, 'name', '?')!r}) declares no "
            f"`modalities`, the tuple of modality names it encodes, such as "
            f"modalities = ('text',){hint}",
        )


def _call_register(impl: pluggy.HookImpl, kind: str) -> list[Any]:
    """Call one plugin's register hook, wrapping its failure with the plugin's name."""
    try:
        result: Any = impl.function()
    except Exception as e:
        raise PluginError(impl.plugin_name, f"failed to register {kind}s: {e}") from e
    return list(result or [])


def check_hook_names(pm: pluggy.PluginManager, plugin: Any) -> None:
    """Refuse a plugin with a hook implementation that no hook specification names (a
    misspelt or unprefixed hook would otherwise never be called), or with a function named
    as a hook but not marked ``@hookimpl``; the error names the plugin, the function and
    the closest hook."""
    name = pm.get_name(plugin) or ""
    if not name or name.isdigit():  # registered without a name: pluggy used its id
        name = getattr(plugin, "__name__", None) or type(plugin).__qualname__
    hooks = sorted(n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_"))
    for caller in pm.get_hookcallers(plugin) or ():
        if not caller.has_spec():
            hint = _closest(caller.name, hooks)
            raise PluginError(name, f"implements {caller.name!r}, which is no mmstore hook{hint}")
    for attr in hooks:
        fn = getattr(plugin, attr, None)
        if callable(fn) and pm.parse_hookimpl_opts(plugin, attr) is None:
            raise PluginError(
                name,
                f"defines {attr!r} without marking it: decorate it with @hookimpl "
                "(from mmstore.plugin import hookimpl)",
            )


def _closest(name: str, hooks: list[str]) -> str:
    close = difflib.get_close_matches(name, hooks, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} The hooks are: {', '.join(hooks)} (mmstore.plugin.hookspecs)"
