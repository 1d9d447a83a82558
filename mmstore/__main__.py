"""``python -m mmstore``: the command line."""

from mmstore.cli.main import main

main()
