"""``python benchmarks/peers``: the peer comparison (see :mod:`peers.runner`)."""

import sys
from pathlib import Path

# this folder's parent (benchmarks/) holds the package and embed_corpus.py; a top-level
# ``benchmarks`` package installed by another project (opacus ships one) would shadow it
# as a namespace package, so the package is imported as ``peers``, not ``benchmarks.peers``
sys.path[0] = str(Path(__file__).resolve().parents[1])

from mmstore.cli.exit import exit_quietly  # noqa: E402
from peers.runner import main  # noqa: E402

if __name__ == "__main__":
    exit_quietly(main())
