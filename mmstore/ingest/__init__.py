"""Writing records: checks at the boundary (:mod:`~mmstore.ingest.records`), what ingest
takes (:mod:`~mmstore.ingest.sources`, :mod:`~mmstore.ingest.files`,
:mod:`~mmstore.ingest.folders`), encoding and committing (:mod:`~mmstore.ingest.ingestor`),
re-embedding (:mod:`~mmstore.ingest.reembed`) and the Ray engine
(:mod:`~mmstore.ingest.on_ray`)."""
