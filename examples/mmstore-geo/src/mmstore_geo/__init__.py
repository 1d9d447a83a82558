"""mmstore-geo: points on the Earth for mmstore.

The ``geopoint`` modality takes ``{"lat": 48.86, "lon": 2.35}`` or a ``(lat, lon)`` pair
in degrees. The ``geo`` encoder maps a point to the 3-D unit vector pointing at it from the
centre of the Earth. The cosine similarity of two such vectors is the cosine of the angle
between them, which is the great-circle distance divided by the Earth's radius; cosine
falls as the angle grows (0 to 180 degrees), so the nearest neighbours by cosine are the
nearest points along the surface, and :func:`distance_km` turns a score back into
kilometres.

Install the package and mmstore finds it through its entry point (group ``mmstore``, name
``geo``)::

    col = store.create_collection("cities", encoders={"place": {"encoder": "geo",
                                                                "modality": "geopoint"}})
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import mmstore
import numpy as np
from mmstore import Encoder, EncoderParams, Modality, ModalityOptions, RecordError
from pydantic import Field

#: the Earth's mean radius (IUGG), in kilometres
EARTH_RADIUS_KM = 6371.0088
KEYS = frozenset({"lat", "lon"})
SHAPE = "expected {'lat': ..., 'lon': ...} or a (lat, lon) pair of numbers"
SWAP_HINT = "; if your pairs are (lon, lat), as in GeoJSON, set the option pair_order='lon_lat'"


class GeoPoint(NamedTuple):
    """A validated point: latitude and longitude in degrees."""

    lat: float
    lon: float


class GeoPointOptions(ModalityOptions):
    """Options of the ``geopoint`` modality (``options={"geopoint": {...}}``)."""

    #: how a pair is read; mappings with ``lat`` and ``lon`` keys are never ambiguous
    pair_order: Literal["lat_lon", "lon_lat"] = "lat_lon"


class GeoPointModality(Modality):
    """A point on the Earth: finite latitude in [-90, 90], longitude in [-180, 180]."""

    name = "geopoint"
    Options = GeoPointOptions
    options: GeoPointOptions

    def validate(self, value: Any, record_id: object, field: str) -> GeoPoint:
        lat, lon, hint = self._unpack(value, record_id, field)
        return GeoPoint(
            _degrees(lat, "lat", 90.0, record_id, field, hint),
            _degrees(lon, "lon", 180.0, record_id, field),
        )

    def _unpack(self, value: Any, record_id: object, field: str) -> tuple[Any, Any, str]:
        """The raw latitude and longitude, and a hint for a latitude out of range."""
        if isinstance(value, Mapping):
            if set(value) != KEYS:
                raise RecordError(record_id, field, f"{SHAPE}; got keys {sorted(map(str, value))}")
            return value["lat"], value["lon"], ""
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise RecordError(record_id, field, f"{SHAPE}, got {type(value).__name__}")
        if len(value) != 2:
            raise RecordError(record_id, field, f"{SHAPE}, got {len(value)} items")
        if self.options.pair_order == "lon_lat":
            return value[1], value[0], ""
        return value[0], value[1], SWAP_HINT

    def to_source(self, value: GeoPoint) -> dict[str, float]:
        return {"lat": value.lat, "lon": value.lon}

    def from_source(self, source: Any) -> GeoPoint:
        return GeoPoint(float(source["lat"]), float(source["lon"]))

    def fingerprint(self, value: GeoPoint) -> str:
        return f"{value.lat!r},{value.lon!r}"


def _degrees(
    raw: Any, axis: str, limit: float, record_id: object, field: str, hint: str = ""
) -> float:
    """One coordinate as a float, or a RecordError saying what is wrong with it."""
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        raise RecordError(
            record_id, field, f"{axis} must be a number of degrees, got {type(raw).__name__}"
        )
    value = float(raw) + 0.0  # -0.0 becomes 0.0, so equal points fingerprint equally
    if not math.isfinite(value):
        raise RecordError(record_id, field, f"{axis} is {value}; give a finite number")
    if not -limit <= value <= limit:
        raise RecordError(
            record_id, field, f"{axis} {value:g} is outside [-{limit:g}, {limit:g}]{hint}"
        )
    return value


class GeoParams(EncoderParams):
    """Parameters of the ``geo`` encoder."""

    #: round coordinates to this many decimal places before embedding (2 is about 1.1 km
    #: of latitude), to coarsen exact locations; ``None`` embeds them as given
    precision: int | None = Field(None, ge=0, le=10)


class GeoEncoder(Encoder):
    """A point to the unit vector from the Earth's centre to it; cosine = cos(angle)."""

    name = "geo"
    #: bump when the vectors change: stores then see a new identity and re-embed
    version = "1"
    modalities = ("geopoint",)
    Params = GeoParams
    params: GeoParams
    batch_size = 65_536

    @property
    def dim(self) -> int:
        return 3

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        coords = np.asarray([(point[0], point[1]) for point in items], dtype=np.float64).reshape(
            -1, 2
        )
        if self.params.precision is not None:
            coords = np.round(coords, self.params.precision)
        return unit_vectors(coords[:, 0], coords[:, 1])


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Latitudes and longitudes in degrees to ``(n, 3)`` float32 unit vectors."""
    phi, lam = np.radians(lat), np.radians(lon)
    xyz = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=1)
    return xyz.astype(np.float32)


def distance_km(score: float, radius_km: float = EARTH_RADIUS_KM) -> float:
    """The great-circle distance that a ``geo`` cosine score stands for, in kilometres."""
    return radius_km * math.acos(min(1.0, max(-1.0, score)))


@mmstore.hookimpl
def mmstore_register_modalities() -> list[type[Modality]]:
    return [GeoPointModality]


@mmstore.hookimpl
def mmstore_register_encoders() -> list[type[Encoder]]:
    return [GeoEncoder]
