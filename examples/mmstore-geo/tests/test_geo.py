"""mmstore-geo against mmstore's conformance kit, and in a real store."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import mmstore
import numpy as np
import pytest
from mmstore.testing import check_encoder, check_modality

import mmstore_geo
from mmstore_geo import GeoEncoder, GeoPoint, GeoPointModality, distance_km

CITIES = {
    "paris": (48.8566, 2.3522),
    "london": (51.5074, -0.1278),
    "berlin": (52.5200, 13.4050),
    "madrid": (40.4168, -3.7038),
    "new_york": (40.7128, -74.0060),
    "sydney": (-33.8688, 151.2093),
    "quito": (-0.1807, -78.4678),
    "fiji": (-17.7134, 178.0650),
}


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The reference great-circle distance, computed independently of the encoder."""
    (lat1, lon1), (lat2, lon2) = (map(math.radians, p) for p in (a, b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * mmstore_geo.EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def points() -> list[GeoPoint]:
    return [GeoPoint(*p) for p in CITIES.values()]


def test_modality_passes_the_conformance_kit() -> None:
    check_modality(
        GeoPointModality(),
        good=[
            {"lat": 48.8566, "lon": 2.3522},
            (51.5074, -0.1278),
            [0, 0],
            np.array([-90.0, 180.0]),
            {"lat": np.float32(10.5), "lon": -180},
        ],
        bad=[
            {"lat": 100, "lon": 0},
            {"lat": 0, "lon": 180.5},
            {"lat": float("nan"), "lon": 0},
            (math.inf, 0),
            {"lat": "48.8", "lon": "2.3"},
            {"lat": True, "lon": 0},
            {"lat": 1},
            {"lat": 1, "lon": 2, "alt": 3},
            (1, 2, 3),
            "48.8,2.3",
            None,
        ],
    )


def test_lon_lat_pair_order_option() -> None:
    geojson = GeoPointModality(pair_order="lon_lat")
    assert geojson.validate((2.3522, 48.8566), "r", "f") == GeoPoint(48.8566, 2.3522)
    assert geojson.validate({"lat": 1, "lon": 2}, "r", "f") == GeoPoint(1.0, 2.0)
    with pytest.raises(mmstore.ConfigError, match="pair_order"):
        GeoPointModality(pair_order="xy")


def test_swapped_pair_error_suggests_the_option() -> None:
    with pytest.raises(mmstore.RecordError, match="pair_order='lon_lat'"):
        GeoPointModality().validate((151.2093, -33.8688), "sydney", "place")


def test_encoder_passes_the_conformance_kit() -> None:
    check_encoder(GeoEncoder(), points(), modality="geopoint")
    check_encoder(GeoEncoder(precision=1), points(), modality="geopoint")


def test_vectors_are_unit_length() -> None:
    vectors = GeoEncoder().encode(points(), "geopoint")
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_score_gives_the_great_circle_distance() -> None:
    vectors = GeoEncoder().encode(points(), "geopoint").astype(np.float64)
    for (i, a), (j, b) in combinations(enumerate(CITIES.values()), 2):
        score = float(vectors[i] @ vectors[j])
        assert distance_km(score) == pytest.approx(haversine_km(a, b), abs=0.5)


def test_precision_rounds_points_and_changes_the_identity() -> None:
    coarse = GeoEncoder(precision=0)
    assert coarse.space() != GeoEncoder().space()
    near = [GeoPoint(48.8566, 2.3522), GeoPoint(49.0, 2.0)]
    a, b = coarse.encode(near, "geopoint")
    assert np.array_equal(a, b)


def test_store_search_orders_by_great_circle_distance(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s", plugins=[mmstore_geo], entrypoints=False) as store:
        col = store.create_collection(
            "cities", encoders={"place": {"encoder": "geo", "modality": "geopoint"}}
        )
        col.ingest([{"id": name, "place": p} for name, p in CITIES.items()])
        hits = col.search(place={"lat": 48.85, "lon": 2.35}, k=len(CITIES))
        by_distance = sorted(CITIES, key=lambda c: haversine_km((48.85, 2.35), CITIES[c]))
        assert hits.ids == by_distance
        assert col.get("paris")[0]["place"] == {"lat": 48.8566, "lon": 2.3522}


def test_bad_point_is_rejected_naming_the_record(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s", plugins=[mmstore_geo], entrypoints=False) as store:
        col = store.create_collection(
            "cities", encoders={"place": {"encoder": "geo", "modality": "geopoint"}}
        )
        records = [{"id": "paris", "place": CITIES["paris"]}, {"id": "x", "place": (100, 0)}]
        report = col.ingest(records, on_error="skip")
        assert [r.id for r in report.rejected] == ["x"]
        assert col.count() == 1
