"""The shape of the code, checked on every run (docs/architecture.md): no import cycle among
mmstore's modules, imports only downward in the layer order, modules of at most 400 lines
and functions of at most 60, at most 15 modules directly in ``mmstore/``, and built-in
plugins that import nothing of mmstore but its plugin API, :mod:`mmstore.plugin`.

Imports are read from the source (AST): those under ``if TYPE_CHECKING:`` do not count,
those inside functions do. ``from a import b`` is an import of the module ``a.b`` when
there is one, else of ``a`` (import-linter's reading)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the layers, lowest first: a module imports from its own layer or lower ones, never higher
#: ("" is the package root, mmstore/__init__.py: the user API, above everything)
LAYERS = [
    "errors",
    "_version",
    "hits",
    "wire",
    "api",
    "config",
    "storage",
    "plugin",
    "encoding",
    "index",
    "state",
    "ingest",
    "datasets",
    "heads",
    "search",
    "collection",
    "store",
    "distributed",
    "client",
    "service",
    "testing",
    "corpus",
    "demo",
    "cli",
    "__main__",
    "",
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_TOP_LEVEL_MODULES = 15
#: the one mmstore module a built-in plugin may import
PLUGIN_API = "mmstore.plugin"
#: (module, function) pairs that are data tables rather than logic (none yet)
DATA_TABLES: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _modules(folder: Path, package: str) -> dict[str, Module]:
    out = {}
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = Module(".".join(parts), path, ast.parse(path.read_text()))
    return out


def core_modules() -> dict[str, Module]:
    return _modules(ROOT / "mmstore", "mmstore")


def plugin_modules() -> dict[str, Module]:
    out: dict[str, Module] = {}
    for folder in sorted((ROOT / "plugins").iterdir()):
        if (folder / "__init__.py").exists():
            out |= _modules(folder, folder.name)
    return out


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def imported_names(mod: Module, hints: bool = False) -> Iterator[tuple[str, int]]:
    """Every module name a runtime import of ``mod`` names (with ``hints``, its
    ``TYPE_CHECKING`` imports too), with its line (absolute, ``from a import b`` as ``a.b``
    and ``a``; the caller keeps the ones that exist)."""
    skip = set() if hints else _type_checking_nodes(mod.tree)
    for node in ast.walk(mod.tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(mod, node)
            for alias in node.names:
                yield f"{base}.{alias.name}|{base}", node.lineno


def _absolute(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    parts = parts[: len(parts) - node.level + 1]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _resolve(name: str, known: set[str]) -> str | None:
    """The module of ``known`` that an imported name is: the longest known prefix."""
    for candidate in name.split("|"):
        while candidate:
            if candidate in known:
                return candidate
            candidate = candidate.rpartition(".")[0]
    return None


def import_graph(mods: dict[str, Module], hints: bool = False) -> dict[str, set[str]]:
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, mod in mods.items():
        for imported, _ in imported_names(mod, hints):
            target = _resolve(imported, known)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return LAYERS.index(top)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{m} ({LAYERS[layer(m)] or 'root'}) imports {t} ({LAYERS[layer(t)] or 'root'})"
        for m, targets in graph.items()
        for t in targets
        if layer(t) > layer(m)
    )


def long_modules(mods: dict[str, Module]) -> list[str]:
    return sorted(
        f"{m.name}: {n} lines"
        for m in mods.values()
        if (n := len(m.path.read_text().splitlines())) > MAX_MODULE_LINES
    )


def long_functions(mods: dict[str, Module]) -> list[str]:
    out = []
    for m in mods.values():
        for node in ast.walk(m.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and (m.name, node.name) not in DATA_TABLES:
                    out.append(f"{m.name}.{node.name}: {lines} lines")
    return sorted(out)


def plugin_internal_imports(mods: dict[str, Module], core: set[str]) -> list[str]:
    """Imports of an mmstore module other than the plugin API (a submodule of it too)."""
    out = []
    for m in mods.values():
        for name, line in imported_names(m):
            target = _resolve(name, core)
            if target is not None and target != PLUGIN_API:
                out.append(f"{m.name}:{line} imports {target}")
    return sorted(out)


# -- the checks -------------------------------------------------------------------------------
def test_every_module_sits_in_a_layer() -> None:
    tops = {m.split(".")[1] if "." in m else "" for m in core_modules()}
    assert tops <= set(LAYERS), f"add these to LAYERS: {sorted(tops - set(LAYERS))}"


def test_no_import_cycle() -> None:
    assert cycles(import_graph(core_modules())) == []


def test_imports_go_down_the_layers() -> None:
    assert upward_imports(import_graph(core_modules())) == []


def test_type_hints_go_down_the_layers_too() -> None:
    """The services are typed with what they take (a CollectionState, not the Collection
    facade above them), so even the ``TYPE_CHECKING`` imports point down."""
    found = upward_imports(import_graph(core_modules(), hints=True))
    # the one back-reference: a Collection keeps the Store that opened it, as ``col.store``
    assert found == ["mmstore.collection (collection) imports mmstore.store (store)"]


def test_no_module_over_400_lines() -> None:
    assert long_modules(core_modules() | plugin_modules()) == []


def test_no_function_over_60_lines() -> None:
    found = long_functions(core_modules() | plugin_modules())
    assert found == []


def test_at_most_15_modules_directly_in_the_package() -> None:
    top = [p.name for p in (ROOT / "mmstore").glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)


def test_built_in_plugins_import_only_the_plugin_api() -> None:
    assert plugin_internal_imports(plugin_modules(), set(core_modules())) == []


# -- the checks catch what they are for ---------------------------------------------------------
def _fake(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = tmp_path / "mmstore" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return _modules(tmp_path / "mmstore", "mmstore")


def test_the_cycle_check_sees_a_loop_through_a_function_but_not_type_checking(
    tmp_path: Path,
) -> None:
    mods = _fake(
        tmp_path,
        {
            "__init__.py": "",
            "storage/__init__.py": "",
            "storage/a.py": "def f():\n    from mmstore.storage import b\n",
            "storage/b.py": "from mmstore.storage.a import f\n",
            "storage/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from mmstore.storage import a\n",
            "index/__init__.py": "",
            "index/d.py": "from . import e\n",
            "index/e.py": "from .d import x\n",
        },
    )
    graph = import_graph(mods)
    assert cycles(graph) == [
        ["mmstore.index.d", "mmstore.index.e"],
        ["mmstore.storage.a", "mmstore.storage.b"],
    ]
    assert "mmstore.storage.a" not in graph["mmstore.storage.c"]


def test_the_layer_check_sees_an_import_upward(tmp_path: Path) -> None:
    mods = _fake(
        tmp_path,
        {
            "__init__.py": "",
            "storage/__init__.py": "",
            "storage/a.py": "import mmstore.search.s\n",
            "search/__init__.py": "",
            "search/s.py": "from mmstore.storage.a import x\nfrom mmstore import errors\n",
            "errors.py": "",
        },
    )
    assert upward_imports(import_graph(mods)) == [
        "mmstore.storage.a (storage) imports mmstore.search.s (search)"
    ]


def test_the_size_checks_count_lines(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    mods = _fake(tmp_path, {"big.py": "def long():\n" + body + "\n" * 340})
    assert long_functions(mods) == ["mmstore.big.long: 61 lines"]
    assert long_modules(mods) == ["mmstore.big: 401 lines"]


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import mmstore\n", ["mmstore"]),
        ("from mmstore import hookimpl\n", ["mmstore"]),
        ("from mmstore.plugin.pools import pmap\n", ["mmstore.plugin.pools"]),
        ("def f():\n    from mmstore.storage.media import PREFIX\n", ["mmstore.storage.media"]),
        ("from mmstore.plugin import hookimpl\nimport numpy\n", []),
    ],
)
def test_the_plugin_check_allows_only_the_plugin_api(
    tmp_path: Path, source: str, bad: list[str]
) -> None:
    path = tmp_path / "p.py"
    path.write_text(source)
    mods = {"p": Module("p", path, ast.parse(source))}
    found = plugin_internal_imports(mods, set(core_modules()))
    assert [line.split(" imports ")[1] for line in found] == bad
