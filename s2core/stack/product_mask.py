"""s2core.stack.product_mask: the product's own cloud mask, from the Scene Classification Layer (SCL) of
L2A products or from the L1C cloud masks (``MSK_CLASSI_B00`` raster, or ``MSK_CLOUDS_B00.gml``
polygons before baseline 04.00: OPAQUE and CIRRUS count as cloud, snow as snow).

Codes: :mod:`s2core.model.classes`.
"""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
from pyproj import CRS
from rasterio.features import rasterize
from shapely.geometry import Polygon

from s2core.model.classes import CLEAR, CLOUD, NODATA, SNOW, product_mask_from_scl
from s2core.model.grid import Grid, project_geometry

__all__ = ["gml_cloud_polygons", "product_mask_from_classi", "product_mask_from_gml", "product_mask_from_polygons",
           "product_mask_from_scl"]


def product_mask_from_classi(opaque: np.ndarray, cirrus: np.ndarray, snow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Product mask codes from the three planes of an L1C ``MSK_CLASSI_B00`` (non-zero = flagged)."""
    out = np.where(valid, CLEAR, NODATA).astype(np.uint8)
    out[valid & (snow != 0)] = SNOW
    out[valid & ((opaque != 0) | (cirrus != 0))] = CLOUD
    return out


def gml_cloud_polygons(data: bytes) -> tuple[str | None, list[tuple[str, object]]]:
    """``(crs, [(mask_type, polygon), ...])`` of an ``MSK_CLOUDS_B00.gml`` file (OPAQUE / CIRRUS)."""
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


def product_mask_from_gml(data: bytes, grid: Grid, valid: np.ndarray) -> np.ndarray:
    """Product mask codes from ``MSK_CLOUDS_B00.gml`` polygons rasterised on ``grid`` (pixel centres)."""
    return product_mask_from_polygons(*gml_cloud_polygons(data), grid, valid)


def product_mask_from_polygons(crs: str | None, polygons: list[tuple[str, object]], grid: Grid,
                               valid: np.ndarray) -> np.ndarray:
    """Product mask codes from parsed cloud polygons (:func:`gml_cloud_polygons`) rasterised on ``grid``."""
    out = np.where(valid, CLEAR, NODATA).astype(np.uint8)
    shapes = []
    for _kind, poly in polygons:
        geom = project_geometry(poly, CRS.from_user_input(grid.crs), src_crs=crs) if crs else poly
        shapes.append((geom, 1))
    if shapes:
        hit = rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8")
        out[valid & (hit != 0)] = CLOUD
    return out
