"""DuckDB: one table ``(id VARCHAR, cat VARCHAR, vec FLOAT[d])`` in a database file,
filled from Arrow. Brute force is ``ORDER BY array_negative_inner_product(vec, q) LIMIT
k``; ``vss`` adds its HNSW index (metric ``ip``, M 32, ef_construction 80, with
experimental persistence) and the same query uses it; ``hnsw_ef_search`` is swept to the
recall target. The extension comes from the PyPI package ``duckdb-extension-vss`` built for
the running DuckDB (no extension can be downloaded here).

The query vector goes in either as a bound parameter or as an SQL literal, whichever is
faster on this DuckDB (binding a Python list to ``FLOAT[384]`` costs about 40 ms in DuckDB
1.5 and 1 ms in 2.0): each system gets its fastest way."""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from peers.protocol import EF_CANDIDATES, HNSW_EF_CONSTRUCTION, HNSW_M, Dataset, System, sweep


class DuckDBBrute(System):
    """DuckDB with no vector index: every query scans the table."""

    name = "duckdb-brute"
    exact = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.con: Any = None
        self.dim = 0
        self.form = "param"

    def _connect(self) -> None:
        self.con = duckdb.connect(str(self.folder / "db.duckdb"))

    def ingest(self, data: Dataset) -> None:
        self._connect()
        self.dim = data.dim
        table = pa.table(
            {
                "id": pa.array(data.ids()),
                "cat": pa.array(data.cat_names()),
                "vec": pa.FixedSizeListArray.from_arrays(pa.array(data.base.ravel()), data.dim),
            }
        )
        self.con.execute(f"CREATE TABLE t (id VARCHAR, cat VARCHAR, vec FLOAT[{data.dim}])")
        self.con.register("src", table)
        self.con.execute("INSERT INTO t SELECT id, cat, vec FROM src")
        self.con.unregister("src")
        self.con.execute("CHECKPOINT")

    def tune(self, data: Dataset, target: float, budget_s: float) -> dict[str, Any]:
        return {"query_form": self._pick_form(data.tune[:5])}

    def _pick_form(self, queries: np.ndarray) -> str:
        """The faster way to pass the query vector, timed on a few queries."""
        best: dict[str, float] = {}
        for form in ("param", "literal"):
            self.form = form
            self.search(queries[0], 10)
            t0 = time.perf_counter()
            for q in queries:
                self.search(q, 10)
            best[form] = time.perf_counter() - t0
        self.form = min(best, key=best.__getitem__)
        return self.form

    def _query(self, q: np.ndarray, k: int, where: str) -> list[str]:
        if self.form == "literal":
            vec = "[" + ",".join(map(repr, q.tolist())) + "]"
            args: list[Any] = []
        else:
            vec, args = "?", [q.tolist()]
        sql = (
            f"SELECT id, cat FROM t {where} ORDER BY "
            f"array_negative_inner_product(vec, {vec}::FLOAT[{self.dim}]) LIMIT {int(k)}"
        )
        return [row[0] for row in self.con.execute(sql, args).fetchall()]

    def search(self, q: np.ndarray, k: int) -> list[str]:
        return self._query(q, k, "")

    def search_filtered(self, q: np.ndarray, k: int, cat: str) -> list[str]:
        if not cat.isalnum():
            raise ValueError(f"unexpected category {cat!r}")
        return self._query(q, k, f"WHERE cat = '{cat}'")

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, "query_form": self.form}

    def close(self) -> None:
        if self.con is not None:
            self.con.close()

    @classmethod
    def reopen(cls, folder: Path, params: dict[str, Any]) -> System:
        system = cls(folder)
        system._connect()
        system.dim, system.form = params["dim"], params["query_form"]
        system._set_search(params)
        return system

    def _set_search(self, params: dict[str, Any]) -> None:
        """Apply tuned search settings (none without an index)."""

    @staticmethod
    def versions() -> dict[str, str]:
        return {"duckdb": duckdb.__version__}


class DuckDBVss(DuckDBBrute):
    """DuckDB with the ``vss`` extension's HNSW index."""

    name = "duckdb-vss"
    exact = False

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.ef = 64

    def _connect(self) -> None:
        super()._connect()
        self.con.execute(f"LOAD '{extension_file()}'")
        self.con.execute("SET hnsw_enable_experimental_persistence = true")

    def build(self, data: Dataset) -> bool:
        self.con.execute(
            "CREATE INDEX vec_hnsw ON t USING HNSW (vec) WITH "
            f"(metric = 'ip', M = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        )
        self.con.execute("CHECKPOINT")
        return True

    def tune(self, data: Dataset, target: float, budget_s: float) -> dict[str, Any]:
        form = self._pick_form(data.tune[:5])
        return {"query_form": form} | sweep(self, data, EF_CANDIDATES, self._ef, target, budget_s)

    def _ef(self, ef: int) -> None:
        self.ef = ef
        self.con.execute(f"SET hnsw_ef_search = {int(ef)}")

    def params(self) -> dict[str, Any]:
        return super().params() | {
            "M": HNSW_M,
            "ef_construction": HNSW_EF_CONSTRUCTION,
            "ef_search": self.ef,
        }

    def _set_search(self, params: dict[str, Any]) -> None:
        self._ef(params["ef_search"])

    @staticmethod
    def versions() -> dict[str, str]:
        return {
            "duckdb": duckdb.__version__,
            "duckdb-extension-vss": metadata.version("duckdb-extension-vss"),
        }


def extension_file() -> Path:
    """The vss extension built for the running DuckDB, as its PyPI package installs it."""
    import duckdb_extension_vss

    folder = Path(duckdb_extension_vss.__file__).parent / "extensions"
    path = folder / f"v{duckdb.__version__}" / "vss.duckdb_extension"
    if not path.is_file():
        built = sorted(p.name for p in folder.iterdir())
        raise RuntimeError(f"duckdb-extension-vss has {built}, not v{duckdb.__version__}")
    return path
