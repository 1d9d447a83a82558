"""The rebuildable caches of the catalog that serve search: one field's vector index
(:mod:`~mmstore.index.vectors`), its file (:mod:`~mmstore.index.file`), its GPU copy
(:mod:`~mmstore.index.gpu`, :mod:`~mmstore.index.multigpu`), a collection's indexes
(:mod:`~mmstore.index.collection`) and the hit cache (:mod:`~mmstore.index.hitcache`)."""
