"""s2core.model.grid: the output grid (CRS, transform, shape), computed once per run.

Like odc-stac's GeoBox, the grid is a plain value; every per-acquisition step is a
function of (request, acquisition, grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.crs import CRS as RioCRS
from shapely.geometry.base import BaseGeometry

from s2core.model.aoi import AOI, transform_xy
from s2core.errors import InvalidParameter

MAX_GRID_PIXELS = 40_000 * 40_000
#: Metres per degree of latitude (WGS84 mean): pixel sizes asked in metres on a geographic CRS.
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid. ``crs`` is a WKT/EPSG string so the value pickles anywhere."""

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (square pixels)."""
        return float(self.transform.a)

    @cached_property
    def is_geographic(self) -> bool:
        """True for a lon/lat grid (pixel sizes in degrees)."""
        return bool(CRS.from_user_input(self.crs).is_geographic)

    @property
    def resolution_m(self) -> float:
        """Pixel size in metres (degrees × :data:`METRES_PER_DEGREE` on a geographic grid)."""
        return self.resolution * METRES_PER_DEGREE if self.is_geographic else self.resolution

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform.c, self.transform.f
        return (left, top + self.transform.e * self.height, left + self.transform.a * self.width, top)

    @property
    def rio_crs(self) -> RioCRS:
        """The CRS as a rasterio object."""
        return RioCRS.from_user_input(self.crs)

    def rows(self, r0: int, r1: int) -> "Grid":
        """Rows ``r0:r1`` of this grid as a grid of their own (same CRS, pixels and columns)."""
        return self.part(r0, r1, 0, self.width)

    def part(self, r0: int, r1: int, c0: int, c1: int) -> "Grid":
        """Rows ``r0:r1`` and columns ``c0:c1`` of this grid as a grid of their own."""
        if not (0 <= r0 < r1 <= self.height and 0 <= c0 < c1 <= self.width):
            raise ValueError(f"rows {r0}:{r1}, columns {c0}:{c1} are not inside a {self.height}×{self.width} grid")
        return Grid(self.crs, self.transform @ Affine.translation(c0, r0), c1 - c0, r1 - r0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description."""
        return {
            "crs": self.crs,
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "resolution": self.resolution,
            "bounds": list(self.bounds),
        }


def crs_string(crs: CRS) -> str:
    """``EPSG:nnnn`` when the CRS has an EPSG code, else its WKT."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def project_geometry(geom: BaseGeometry, dst_crs: CRS, src_crs: str | CRS = "EPSG:4326") -> BaseGeometry:
    """Reproject a shapely geometry (lon/lat by default) to ``dst_crs``."""
    tr = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
    return transform_xy(tr.transform, geom)


def output_grid(aoi: AOI, crs: CRS, resolution: float, origin: Optional[tuple[float, float]] = None) -> Grid:
    """The grid covering ``aoi`` in ``crs`` with pixels of ``resolution`` metres.

    Edges are snapped to multiples of ``resolution`` so that, in the product's own UTM
    zone, 10/20/60 m output pixels align with Sentinel-2's native pixels (origins are
    multiples of 60 m). ``origin`` (x, y) snaps them to ``origin + k * resolution`` instead
    (e.g. a tile's upper-left corner, so that any resolution lines up with the tile).
    """
    geom = project_geometry(aoi.unwrapped, crs)
    minx, miny, maxx, maxy = geom.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidParameter(f"The AOI cannot be projected to {crs_string(crs)}: choose a CRS that covers it.")
    res = float(resolution)
    if crs.is_geographic:  # metres asked, degrees given: square pixels of that size along a meridian
        res = res / METRES_PER_DEGREE
    ox, oy = origin or (0.0, 0.0)
    tol = min(0.01, res * 1e-3)  # a box given in lon/lat comes back a few µm off its pixel edges
    left = ox + math.floor((minx - ox + tol) / res) * res
    bottom = oy + math.floor((miny - oy + tol) / res) * res
    right = ox + math.ceil((maxx - ox - tol) / res) * res
    top = oy + math.ceil((maxy - oy - tol) / res) * res
    width = max(1, int(round((right - left) / res)))
    height = max(1, int(round((top - bottom) / res)))
    if width * height > MAX_GRID_PIXELS:
        raise InvalidParameter(
            f"The output grid would be {width}×{height} pixels: use a coarser resolution or a smaller AOI."
        )
    return Grid(crs=crs_string(crs), transform=Affine(res, 0.0, left, 0.0, -res, top), width=width, height=height)


def aoi_pixels(aoi: AOI, grid: Grid) -> Optional[np.ndarray]:
    """The grid's pixels whose centre lies inside the AOI (bool (H, W)); None when that is every pixel
    (a rectangle in the grid's own CRS), so that callers skip a whole-grid array."""
    from rasterio.features import geometry_mask  # lazy: only runs that compute statistics rasterise

    geom = project_geometry(aoi.unwrapped, CRS.from_user_input(grid.crs))
    inside = geometry_mask([geom], out_shape=grid.shape, transform=grid.transform, invert=True)
    return None if inside.all() else inside
