"""The demo: a store on the embedded default (the bundled all-MiniLM-L6-v2), filled with
docstrings of Python's standard library, then searched, filtered, closed and reopened."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from mmstore.collection import Collection
from mmstore.corpus import docstrings
from mmstore.store import open as open_store

QUERIES = (
    ("read the contents of a compressed archive", None),
    ("parse command line arguments", None),
    ("send an email message", None),
    ("a date and time with a timezone", {"kind": "class"}),
    ("compute a cryptographic hash", {"module": {"$in": ["hashlib", "hmac", "secrets"]}}),
)


def run(path: Path, limit: int, echo: Callable[[str], None] = print) -> None:
    """Build the demo store at ``path`` (replacing an earlier one) and show searches."""
    shutil.rmtree(path, ignore_errors=True)
    records = [
        {
            "id": d["id"],
            "text": d["text"],
            "label": d["kind"],
            "meta": {"module": d["module"], "kind": d["kind"]},
        }
        for d in docstrings(limit)
    ]
    echo(f"{len(records)} docstrings of the standard library -> {path}")
    with open_store(path) as store:
        col = store.create_collection("stdlib", encoders={"text": "sentence_transformers"})
        report = col.ingest(records, progress=True, chunk_size=256)
        echo(str(report))
        for text, where in QUERIES:
            _show(col, text, where, echo)
        first = str(records[0]["id"])
        hits = col.search(record=first, k=3)
        echo(f"\nmore like {first!r}: {hits.ids}")
    start = time.perf_counter()
    with open_store(path) as store:
        col = store.collection("stdlib")
        hits = col.search(text=QUERIES[0][0], k=3)
        echo(
            f"\nreopened in {time.perf_counter() - start:.2f}s (open + first search): "
            f"{len(col)} records, top hit {hits.ids[0]!r}"
        )


def _show(col: Collection, text: str, where: dict | None, echo: Callable[[str], None]) -> None:
    hits = col.search(text=text, k=3, where=where)
    echo(f"\nsearch {text!r}" + (f" where {where}" if where else ""))
    for hit in hits:
        echo(f"  {hit.score:.3f}  {hit.id:<45} {hit.values['text'][:70]}")
