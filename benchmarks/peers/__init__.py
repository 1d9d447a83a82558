"""Issue 7: mmstore beside its peers on the same data, each system in its own process.

Run from the repository root: ``.venv/bin/python benchmarks/peers`` (``--tiny`` for the
smoke size, ``--help`` for the flags). The peers (Chroma, LanceDB, DuckDB with ``vss``) run
in a virtual environment that the command creates on first use; mmstore, raw FAISS and
DuckDB brute force run in this project's environment.
"""
