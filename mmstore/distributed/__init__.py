"""Launchers of distributed head training, above the store: each opens the store read-only
in every rank and runs one rank's part (:mod:`~mmstore.distributed.rank`), under torchrun
(:mod:`~mmstore.distributed.torchrun`) or Ray Train (:mod:`~mmstore.distributed.ray_train`).
The training itself is :mod:`mmstore.heads.distributed`."""
