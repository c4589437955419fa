"""AOI parsing/validation and request validation: every bad input gives a precise error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.geometry
import shapely.wkt

from s2core import make_request, parse_aoi
from s2core.errors import AOITooLarge, InvalidAOI, InvalidDateRange, InvalidParameter, UnknownBand

SQUARE = "POLYGON((16 46, 16.05 46, 16.05 46.05, 16 46.05, 16 46))"


def _base(**kw):
    args = dict(aoi=SQUARE, start="2023-08-10", end="2023-08-20", catalog="pc")
    args.update(kw)
    return args


def test_wkt_geojson_feature_collection_agree():
    geom = shapely.wkt.loads(SQUARE)
    gj = shapely.geometry.mapping(geom)
    forms = [SQUARE, gj, json.dumps(gj), {"type": "Feature", "geometry": gj, "properties": {}},
             {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": gj, "properties": {}}]}]
    areas = [parse_aoi(f).area_km2 for f in forms]
    assert np.allclose(areas, areas[0])
    # 0.05° x 0.05° at 46°N: 5.56 km x 3.86 km
    assert 21.0 < areas[0] < 22.0


@pytest.mark.parametrize("driver,suffix", [("GeoJSON", ".geojson"), ("GPKG", ".gpkg"), ("ESRI Shapefile", ".shp")])
def test_vector_files(tmp_path: Path, driver: str, suffix: str):
    import pyogrio

    geom = shapely.wkt.loads(SQUARE)
    path = tmp_path / f"aoi{suffix}"
    pyogrio.raw.write(path, np.array([shapely.to_wkb(geom)], dtype=object), [], [], driver=driver,
                      crs="EPSG:4326", geometry_type="Polygon")
    aoi = parse_aoi(str(path))
    assert aoi.geometry.equals_exact(geom, 1e-9) or abs(aoi.area_km2 - parse_aoi(SQUARE).area_km2) < 1e-6


def test_vector_file_in_projected_crs_is_reprojected(tmp_path: Path):
    import pyogrio

    utm = shapely.box(580000, 5094000, 585000, 5099000)  # 5 x 5 km in EPSG:32633
    path = tmp_path / "utm.gpkg"
    pyogrio.raw.write(path, np.array([shapely.to_wkb(utm)], dtype=object), [], [], driver="GPKG",
                      crs="EPSG:32633", geometry_type="Polygon")
    aoi = parse_aoi(path)
    assert aoi.area_km2 == pytest.approx(25.0, rel=2e-3)
    assert aoi.utm_crs.to_epsg() == 32633


def test_antimeridian_split_and_unwrapped():
    # RFC 7946 form: two parts split at ±180
    mp = {"type": "MultiPolygon", "coordinates": [
        [[[179.9, -16.5], [180, -16.5], [180, -16.4], [179.9, -16.4], [179.9, -16.5]]],
        [[[-180, -16.5], [-179.9, -16.5], [-179.9, -16.4], [-180, -16.4], [-180, -16.5]]]]}
    aoi = parse_aoi(mp)
    assert aoi.crosses_antimeridian
    assert aoi.unwrapped.geom_type == "Polygon"  # one piece once unwrapped
    assert aoi.unwrapped.bounds[0] == pytest.approx(179.9) and aoi.unwrapped.bounds[2] == pytest.approx(180.1)
    # 0.2° x 0.1° at 16.5°S ≈ 21.3 km x 11.1 km, not 360° wide
    assert 200 < aoi.area_km2 < 260
    # the same area drawn as one ring jumping across the line is split into two parts
    ring = parse_aoi("POLYGON((179.9 -16.5, -179.9 -16.5, -179.9 -16.4, 179.9 -16.4, 179.9 -16.5))")
    assert ring.geometry.geom_type == "MultiPolygon"
    assert ring.area_km2 == pytest.approx(aoi.area_km2, rel=1e-6)
    assert ring.utm_crs.to_epsg() in (32701, 32760)


@pytest.mark.parametrize("value,needle", [
    ("POINT(16 46)", "Point, not an area"),
    ("LINESTRING(16 46, 16.1 46.1)", "LineString, not an area"),
    ("POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))", "invalid"),
    ("POLYGON EMPTY", "empty"),
    ("POLYGON((500000 5000000, 501000 5000000, 501000 5001000, 500000 5000000))", "not longitude/latitude"),
    ("not a geometry", "neither an existing vector file"),
    ("missing.geojson", "does not exist"),
    ('{"type": "Polygon", ', "not valid JSON"),
    ({"type": "FeatureCollection", "features": []}, "no geometry"),
    (None, "No AOI"),
])
def test_bad_aois(value, needle):
    with pytest.raises(InvalidAOI, match=needle):
        parse_aoi(value)


def test_aoi_over_limit():
    big = "POLYGON((10 40, 12 40, 12 42, 10 42, 10 40))"  # ~37 000 km²
    with pytest.raises(AOITooLarge, match="above the limit of 2,500 km²"):
        make_request(**_base(aoi=big))
    assert make_request(**_base(aoi=big, max_aoi_km2=50000)).aoi.area_km2 > 30000


def test_request_defaults_follow_the_reference():
    req = make_request(**_base())
    assert req.bands == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    assert req.min_tile_cover == 0.99 and req.dl_timeout == 120 and req.resolution == 10
    assert req.upsampling == "bilinear" and req.max_tiles_per_time is None
    assert req.output_crs.to_epsg() == 32633


@pytest.mark.parametrize("kw,exc,needle", [
    (dict(end="2023-08-01"), InvalidDateRange, "before the start date"),
    (dict(start="2023-13-01"), InvalidDateRange, "not YYYY-MM-DD"),
    (dict(bands="B02,B13,foo"), UnknownBand, "B13, foo"),
    (dict(bands="B10"), UnknownBand, "only in L1C"),
    (dict(min_tile_cover=1.5), InvalidParameter, "min_tile_cover"),
    (dict(max_tiles_per_time=0), InvalidParameter, "max_tiles_per_time"),
    (dict(dl_timeout=0), InvalidParameter, "dl_timeout"),
    (dict(resolution=-10), InvalidParameter, "resolution"),
    (dict(upsampling="lanczos"), InvalidParameter, "upsampling"),
    (dict(crs="EPSG:999999"), InvalidParameter, "not a CRS"),
    (dict(catalog=""), InvalidParameter, "No catalog"),
])
def test_bad_parameters(kw, exc, needle):
    with pytest.raises(exc, match=needle):
        make_request(**_base(**kw))


def test_band_aliases_and_order():
    req = make_request(**_base(bands="nir, red,b8a,B2"))
    assert req.bands == ("B08", "B04", "B8A", "B02")


def test_pc_key_never_shown():
    secret = "abcdefghijklmnop1234567890"
    req = make_request(**_base(pc_key=secret))
    assert secret not in repr(req) and secret not in str(req)
    params = json.dumps(req.public_params())
    assert secret not in params and '"pc_key_given": true' in params
    assert req.pc_key.get_secret_value() == secret
    with pytest.raises(InvalidParameter) as err:
        make_request(**_base(pc_key=secret, dl_timeout=-1))
    assert secret not in str(err.value)
