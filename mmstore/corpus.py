"""Real text that every Python installation ships: docstrings of the standard library (and,
when more is asked for, of installed packages), read with ``ast``: nothing is imported or
executed. Used by the demo and the benchmarks."""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "testing"}


def default_roots() -> list[Path]:
    """The standard library first, then the installed packages."""
    paths = sysconfig.get_paths()
    return [Path(paths["stdlib"]), Path(paths["purelib"])]


def docstrings(
    limit: int, roots: list[Path] | None = None, min_words: int = 5, paragraphs: int = 1
) -> list[dict[str, str]]:
    """Up to ``limit`` records ``{"id", "text", "module", "package", "kind"}``, one per
    function or class docstring paragraph (the first ``paragraphs`` of each, deduplicated),
    in a stable order."""
    out: list[dict[str, str]] = []
    seen_text: set[str] = set()
    seen_id: set[str] = set()
    for root in roots or default_roots():
        for path in _files(root):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            for kind, name, line, text in _docs(path, paragraphs):
                if len(text.split()) < min_words or text in seen_text:
                    continue
                rid = f"{module}.{name}"
                rid = rid if rid not in seen_id else f"{rid}:{line}"
                seen_text.add(text)
                seen_id.add(rid)
                out.append(
                    {
                        "id": rid,
                        "text": text,
                        "module": module,
                        "package": module.split(".")[0],
                        "kind": kind,
                    }
                )
                if len(out) >= limit:
                    return out
    return out


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            yield path


def _docs(path: Path, paragraphs: int) -> Iterator[tuple[str, str, int, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            doc = ast.get_docstring(node)
            if doc:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                for i, para in enumerate(doc.split("\n\n")[:paragraphs]):
                    name = node.name if i == 0 else f"{node.name}#{i}"
                    yield kind, name, node.lineno, " ".join(para.split())
