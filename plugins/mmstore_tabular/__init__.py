"""Built-in plugin: the ``tabular`` modality (a row of named columns, kept inline in the
catalog) and the ``tabular`` encoder, fitted to the first records of a field.

A field such as ``{"row": {"encoder": "tabular", "modality": "tabular", "numeric": ["price"],
"categorical": ["brand"], "max_categories": 32}}`` takes rows like
``{"price": 9.5, "brand": "acme"}``. Its vectors are ``[standardized numerics, one-hot per
categorical with an out-of-vocabulary slot, bias]`` (see :class:`TabularEncoder`); the
means, scales and vocabularies come from the first chunk the field ingests and are kept in
the catalog, so later ingests and queries use the same ones.
"""

from __future__ import annotations

from mmstore.plugin import Encoder, Modality, hookimpl
from mmstore_tabular.encoder import BIAS, TabularEncoder, TabularParams, category
from mmstore_tabular.modality import MAX_COLUMNS, Tabular

__all__ = ["BIAS", "MAX_COLUMNS", "Tabular", "TabularEncoder", "TabularParams", "category"]


@hookimpl
def mmstore_register_modalities() -> list[type[Modality]]:
    return [Tabular]


@hookimpl
def mmstore_register_encoders() -> list[type[Encoder]]:
    return [TabularEncoder]
