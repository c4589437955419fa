"""s2core.model.aoi: parse, validate and measure an area of interest (GeoJSON, WKT or vector file).

An :class:`AOI` is always held in WGS84 longitude/latitude. AOIs that cross the
antimeridian are kept *split at ±180°* (RFC 7946) in :attr:`AOI.geometry` and
*unwrapped* (longitudes continuous past 180°) in :attr:`AOI.unwrapped`, which is what
projections and areas are computed from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely import wkt as shapely_wkt
from shapely.errors import ShapelyError
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from s2core.errors import AOITooLarge, InvalidAOI

def transform_xy(fn, geom: BaseGeometry) -> BaseGeometry:
    """Apply ``fn(x_array, y_array) -> (x, y)`` to every coordinate of ``geom``."""
    return shapely.transform(geom, lambda x, y: tuple(map(np.asarray, fn(x, y))), interleaved=False)


def shift_lon(geom: BaseGeometry, shift: float, only_negative: bool = False) -> BaseGeometry:
    """Add ``shift`` degrees to longitudes (only to negative ones when ``only_negative``)."""
    if only_negative:
        return transform_xy(lambda x, y: (np.where(x < 0, x + shift, x), y), geom)
    return transform_xy(lambda x, y: (x + shift, y), geom)


VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".kml", ".gml")


@dataclass(frozen=True)
class AOI:
    """A validated polygonal area of interest in EPSG:4326.

    Example:
        >>> aoi = parse_aoi("POLYGON((16 46, 16.05 46, 16.05 46.05, 16 46.05, 16 46))")
        >>> round(aoi.area_km2, 1)
        21.5
    """

    geometry: BaseGeometry  # split at the antimeridian when it crosses it
    unwrapped: BaseGeometry  # same area, longitudes continuous (may exceed 180)

    @property
    def crosses_antimeridian(self) -> bool:
        """True when the AOI spans the ±180° meridian."""
        minx, _, maxx, _ = self.unwrapped.bounds
        return maxx > 180.0 or minx < -180.0

    @cached_property
    def centroid_lonlat(self) -> tuple[float, float]:
        """(lon, lat) of the centroid, longitude normalised to [-180, 180)."""
        c = self.unwrapped.centroid
        return (((c.x + 180.0) % 360.0) - 180.0, c.y)

    @cached_property
    def equal_area_crs(self) -> CRS:
        """A Lambert azimuthal equal-area CRS centred on the AOI (areas in m², any size)."""
        lon, lat = self.centroid_lonlat
        return CRS.from_proj4(f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +datum=WGS84 +units=m +no_defs")

    @cached_property
    def _to_equal_area(self) -> Transformer:
        return Transformer.from_crs("EPSG:4326", self.equal_area_crs, always_xy=True)

    def to_equal_area(self, geom: BaseGeometry) -> BaseGeometry:
        """Project a lon/lat geometry (split or unwrapped) into :attr:`equal_area_crs`."""
        return transform_xy(self._to_equal_area.transform, geom)

    @cached_property
    def projected(self) -> BaseGeometry:
        """The AOI in :attr:`equal_area_crs` (metres)."""
        return self.to_equal_area(self.unwrapped)

    @property
    def area_m2(self) -> float:
        """Area in square metres."""
        return float(self.projected.area)

    @property
    def area_km2(self) -> float:
        """Area in square kilometres."""
        return self.area_m2 / 1e6

    @cached_property
    def utm_crs(self) -> CRS:
        """The WGS84 / UTM zone CRS of the AOI's centroid (EPSG:326zz north, 327zz south)."""
        lon, lat = self.centroid_lonlat
        zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
        return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)

    def to_geojson(self) -> dict[str, Any]:
        """The split (RFC 7946) geometry as a GeoJSON dict."""
        return mapping(self.geometry)


def parse_aoi(value: Any, *, max_km2: float | None = None) -> AOI:
    """Turn a GeoJSON (Geometry, Feature, FeatureCollection; dict or string), WKT string,
    shapely geometry, :class:`AOI` or vector file path into a validated :class:`AOI`.

    Raises:
        InvalidAOI: unparsable, empty, invalid, non-polygonal or out-of-range geometry.
        AOITooLarge: the area exceeds ``max_km2``.
    """
    if isinstance(value, AOI):
        aoi = value
    else:
        geom = _to_geometry(value)
        aoi = _validate(geom)
    if max_km2 is not None and aoi.area_km2 > max_km2:
        raise AOITooLarge(
            f"AOI is {aoi.area_km2:,.0f} km², above the limit of {max_km2:,.0f} km²: draw a smaller "
            "area, split it into several runs, or raise max_aoi_km2 (--max-aoi-km2)."
        )
    return aoi


# --- parsing --------------------------------------------------------------------------
def _to_geometry(value: Any) -> BaseGeometry:
    if value is None:
        raise InvalidAOI("No AOI given: draw a polygon, upload a GeoJSON/GeoPackage/Shapefile, or pass WKT.")
    if isinstance(value, BaseGeometry):
        return value
    if isinstance(value, dict):
        return _from_geojson(value)
    if isinstance(value, Path):
        return _from_file(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidAOI("The AOI is an empty string: pass a file path, a GeoJSON string or WKT.")
        if text.startswith("{"):
            try:
                return _from_geojson(json.loads(text))
            except json.JSONDecodeError as exc:
                raise InvalidAOI(f"The AOI looks like GeoJSON but is not valid JSON ({exc.msg} at char {exc.pos}).") from exc
        if len(text) < 4096 and ("\n" not in text) and (Path(text).suffix.lower() in VECTOR_SUFFIXES or Path(text).exists()):
            return _from_file(Path(text))
        try:
            return shapely_wkt.loads(text)
        except (ShapelyError, ValueError, TypeError) as exc:
            raise InvalidAOI(
                f"Could not read the AOI {text[:60]!r}: it is neither an existing vector file, GeoJSON, "
                "nor WKT (e.g. 'POLYGON((lon lat, ...))')."
            ) from exc
    raise InvalidAOI(f"Unsupported AOI type {type(value).__name__}: give GeoJSON, WKT or a vector file path.")


def _from_geojson(obj: Any) -> BaseGeometry:
    if not isinstance(obj, dict) or "type" not in obj:
        raise InvalidAOI("The GeoJSON AOI has no 'type': give a Geometry, Feature or FeatureCollection.")
    kind = obj["type"]
    try:
        if kind == "FeatureCollection":
            feats = obj.get("features") or []
            geoms = [shape(f["geometry"]) for f in feats if f.get("geometry")]
            if not geoms:
                raise InvalidAOI("The GeoJSON FeatureCollection has no geometry: draw or upload at least one polygon.")
            return GeometryCollection(geoms) if len(geoms) > 1 else geoms[0]
        if kind == "Feature":
            if not obj.get("geometry"):
                raise InvalidAOI("The GeoJSON Feature has no geometry.")
            return shape(obj["geometry"])
        return shape(obj)
    except InvalidAOI:
        raise
    except (ShapelyError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise InvalidAOI(f"The GeoJSON AOI of type {kind!r} is malformed ({exc}).") from exc


def _from_file(path: Path) -> BaseGeometry:
    if not path.exists():
        raise InvalidAOI(f"AOI file {str(path)!r} does not exist: check the path.")
    try:
        import pyogrio  # lazy: vector-file reading only for AOI files

        _, _, geoms_wkb, _ = pyogrio.raw.read(path)
        info = pyogrio.read_info(path)
    except Exception as exc:  # pyogrio raises DataSourceError / DataLayerError / others
        raise InvalidAOI(
            f"Could not read AOI file {path.name!r} ({exc}): use GeoJSON, GeoPackage or Shapefile."
        ) from exc
    geoms = [shapely.from_wkb(g) for g in geoms_wkb if g is not None]
    if not geoms:
        raise InvalidAOI(f"AOI file {path.name!r} holds no geometry.")
    geom = GeometryCollection(geoms) if len(geoms) > 1 else geoms[0]
    crs = info.get("crs")
    if crs:
        src = CRS.from_user_input(crs)
        if not src.equals(CRS.from_epsg(4326)) and not src.equals(CRS.from_user_input("OGC:CRS84")):
            tr = Transformer.from_crs(src, "EPSG:4326", always_xy=True)
            geom = transform_xy(tr.transform, geom)
    return geom


# --- validation and antimeridian handling ----------------------------------------------
def _polygons_of(geom: BaseGeometry) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom]
    if isinstance(geom, MultiPolygon):
        return list(geom.geoms)
    if isinstance(geom, GeometryCollection):
        out: list[Polygon] = []
        for g in geom.geoms:
            out.extend(_polygons_of(g))
        return out
    raise InvalidAOI(
        f"The AOI is a {geom.geom_type}, not an area: draw a rectangle or polygon "
        "(or buffer points/lines into polygons first)."
    )


def _unwrap_polygon(poly: Polygon) -> Polygon:
    """Make a ring that jumps across ±180° continuous by shifting negative longitudes by 360."""
    xs = [x for x, _ in poly.exterior.coords]
    jumps = any(abs(a - b) > 180.0 for a, b in zip(xs, xs[1:]))
    if not jumps:
        return poly
    return shift_lon(poly, 360.0, only_negative=True)


def _validate(geom: BaseGeometry) -> AOI:
    if geom.is_empty:
        raise InvalidAOI("The AOI geometry is empty: draw or upload a polygon with an area.")
    polys = _polygons_of(geom)
    if not polys:
        raise InvalidAOI("The AOI holds no polygon: draw a rectangle or polygon.")
    for p in polys:
        if not p.is_valid:
            raise InvalidAOI(
                f"The AOI polygon is invalid ({explain_validity(p)}): fix self-intersections, e.g. redraw it "
                "or repair it with shapely.make_valid / QGIS 'Fix geometries'."
            )
    minx, miny, maxx, maxy = MultiPolygon(polys).bounds
    if miny < -90 or maxy > 90 or minx < -360 or maxx > 540:
        raise InvalidAOI(
            f"AOI coordinates {tuple(round(v, 3) for v in (minx, miny, maxx, maxy))} are not longitude/latitude: "
            "give WGS84 (EPSG:4326) coordinates, or a vector file that declares its CRS."
        )
    for p in polys:  # past ±180 only for a ring drawn continuously across the antimeridian (179 .. 181)
        lo, _, hi, _ = p.bounds
        if (lo < -180 or hi > 180) and not (lo <= 180 <= hi or lo <= -180 <= hi):
            bad = hi if hi > 180 else lo
            raise InvalidAOI(
                f"AOI longitude {bad:g} is outside -180..180: give WGS84 longitudes (a polygon that crosses the "
                "antimeridian may run on past ±180, e.g. from 179 to 181)."
            )
    unwrapped_parts = [_unwrap_polygon(p) for p in polys]
    # Parts given split at ±180 (RFC 7946): move western parts east when the AOI spans the line.
    touches_east = any(p.bounds[2] >= 180.0 - 1e-9 for p in unwrapped_parts)
    touches_west = any(p.bounds[0] <= -180.0 + 1e-9 for p in unwrapped_parts)
    if touches_east and touches_west:
        unwrapped_parts = [
            shift_lon(p, 360.0) if p.bounds[2] <= 0 else p
            for p in unwrapped_parts
        ]
    unwrapped = shapely.union_all(unwrapped_parts)
    if unwrapped.area <= 0:
        raise InvalidAOI("The AOI has zero area: draw a polygon, not a line or a point.")
    split = _split_at_antimeridian(unwrapped)
    return AOI(geometry=split, unwrapped=unwrapped)


def _split_at_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    minx, _, maxx, _ = geom.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return geom
    parts: list[Polygon] = []
    for lo, hi, shift in ((-540.0, -180.0, 360.0), (-180.0, 180.0, 0.0), (180.0, 540.0, -360.0)):
        piece = geom.intersection(box(lo, -90, hi, 90))
        if piece.is_empty or piece.area == 0:
            continue
        piece = shift_lon(piece, shift)
        parts.extend(p for p in _polygons_of(piece) if p.area > 0)
    return MultiPolygon(parts)
