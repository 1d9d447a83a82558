"""A collection's fields at run time: their modality and encoder instances and identities
(:mod:`~mmstore.encoding.fields`) and the state encoders fit once per field
(:mod:`~mmstore.encoding.fitted`)."""
