"""s2core.masks: the product's own cloud mask, from the Scene Classification Layer (SCL) of
L2A products or from the L1C cloud masks (``MSK_CLASSI_B00`` raster, or ``MSK_CLOUDS_B00.gml``
polygons before baseline 04.00: OPAQUE and CIRRUS count as cloud, snow as snow).

Product mask values (uint8):

====  ==========  =========================================
code  name        SCL classes
====  ==========  =========================================
0     nodata      0 (no data)
1     clear       2, 4, 5, 6, 7 and invalid codes (> 11)
2     cloud       8 (medium), 9 (high probability), 10 (thin cirrus)
3     shadow      3 (cloud shadow)
4     snow        11 (snow / ice)
5     defective   1 (saturated or defective)
====  ==========  =========================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pyproj import CRS

if TYPE_CHECKING:
    from s2core.grid import Grid

NODATA = 0
CLEAR = 1
CLOUD = 2
SHADOW = 3
SNOW = 4
DEFECTIVE = 5

MASK_CLASSES: dict[int, str] = {
    NODATA: "nodata", CLEAR: "clear", CLOUD: "cloud", SHADOW: "shadow", SNOW: "snow", DEFECTIVE: "defective",
}

_LUT = np.full(256, CLEAR, dtype=np.uint8)  # invalid codes (12..255) count as unclassified -> clear
_LUT[0] = NODATA
_LUT[1] = DEFECTIVE
_LUT[3] = SHADOW
_LUT[[8, 9, 10]] = CLOUD
_LUT[11] = SNOW


def product_mask_from_scl(scl: np.ndarray) -> np.ndarray:
    """Map an SCL array (uint8) to product mask codes (see module docstring)."""
    return _LUT[np.asarray(scl, dtype=np.uint8)]


def class_fractions(mask: np.ndarray) -> dict[str, float]:
    """Fraction of *valid* pixels in each product mask class (nodata: fraction of all pixels)."""
    flat = mask.reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    for i in range(0, flat.size, 1 << 24):  # by chunks: bincount widens to int64 (8x a whole uint8 mask)
        counts += np.bincount(flat[i:i + (1 << 24)], minlength=256)
    total = mask.size
    valid = total - counts[NODATA]
    out = {"nodata": float(counts[NODATA] / total) if total else 0.0}
    for code, name in MASK_CLASSES.items():
        if code != NODATA:
            out[name] = float(counts[code] / valid) if valid else 0.0
    return out


def product_mask_from_classi(opaque: np.ndarray, cirrus: np.ndarray, snow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Product mask codes from the three planes of an L1C ``MSK_CLASSI_B00`` (non-zero = flagged)."""
    out = np.where(valid, CLEAR, NODATA).astype(np.uint8)
    out[valid & (snow != 0)] = SNOW
    out[valid & ((opaque != 0) | (cirrus != 0))] = CLOUD
    return out


def gml_cloud_polygons(data: bytes) -> tuple[str | None, list[tuple[str, object]]]:
    """``(crs, [(mask_type, polygon), ...])`` of an ``MSK_CLOUDS_B00.gml`` file (OPAQUE / CIRRUS)."""
    from xml.etree import ElementTree

    from shapely.geometry import Polygon

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    root = ElementTree.fromstring(data)
    crs = None
    for el in root.iter():
        srs = el.get("srsName")
        if srs:
            crs = "EPSG:" + srs.rsplit(":", 1)[-1]
            break
    polygons: list[tuple[str, object]] = []
    for feat in (e for e in root.iter() if local(e.tag) == "MaskFeature"):
        kind = next((e.text or "" for e in feat.iter() if local(e.tag) == "maskType"), "").strip().upper()
        for poly in (e for e in feat.iter() if local(e.tag) == "Polygon"):
            rings = []
            for ring in (e for e in poly.iter() if local(e.tag) == "posList"):
                v = [float(x) for x in (ring.text or "").split()]
                dim = int(ring.get("srsDimension") or 2)
                rings.append([(v[i], v[i + 1]) for i in range(0, len(v) - dim + 1, dim)])
            if rings and len(rings[0]) >= 3:
                polygons.append((kind, Polygon(rings[0], rings[1:])))
    return crs, polygons


def product_mask_from_gml(data: bytes, grid: "Grid", valid: np.ndarray) -> np.ndarray:
    """Product mask codes from ``MSK_CLOUDS_B00.gml`` polygons rasterised on ``grid`` (pixel centres)."""
    return product_mask_from_polygons(*gml_cloud_polygons(data), grid, valid)


def product_mask_from_polygons(crs: str | None, polygons: list[tuple[str, object]], grid: "Grid",
                               valid: np.ndarray) -> np.ndarray:
    """Product mask codes from parsed cloud polygons (:func:`gml_cloud_polygons`) rasterised on ``grid``."""
    from rasterio.features import rasterize

    from s2core.grid import project_geometry

    out = np.where(valid, CLEAR, NODATA).astype(np.uint8)
    shapes = []
    for _kind, poly in polygons:
        geom = project_geometry(poly, CRS.from_user_input(grid.crs), src_crs=crs) if crs else poly
        shapes.append((geom, 1))
    if shapes:
        hit = rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8")
        out[valid & (hit != 0)] = CLOUD
    return out
