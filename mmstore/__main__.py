"""``python -m mmstore``: the command line."""

from mmstore.cli import main

main()
