"""The command line (click): ``mmstore`` and its verbs (:mod:`~mmstore.cli.main`)."""
