"""s2core.stack.land_sea: land/sea masking to NoData, offline.

Source: the ``global-land-mask`` package (a 1 km, 30 arc-second global land/ocean raster from
NOAA's GLOBE digital elevation model, shipped inside the wheel; no download). Sea is the ocean
of that raster; inland lakes and rivers are land.

At 1 km the coastline is blocky. Where the product has a Scene Classification Layer, the
coast is refined at the output resolution: a pixel is sea when the 1 km mask says sea, or when
SCL says water (class 6) within :data:`COAST_BUFFER_M` of the 1 km sea, so lakes inland stay land.

``mode``: ``land`` sets land pixels to NoData (keeps the sea), ``sea`` sets sea pixels to
NoData (keeps the land).
"""

from __future__ import annotations

import logging
from typing import Literal, Optional

import numpy as np
from pyproj import Transformer
from scipy import ndimage

from s2core.model.classes import SCL_WATER
from s2core.errors import InvalidParameter
from s2core.model.grid import Grid

log = logging.getLogger(__name__)

LandSeaMode = Literal["none", "land", "sea"]
#: The source mask's pixel size (30 arc-seconds).
SOURCE_RESOLUTION_M = 1000.0
#: SCL water this close to the 1 km sea counts as sea (the coarse coastline's error).
COAST_BUFFER_M = 1500.0


class SeaMask:
    """The sea of one grid, computed once at the 1 km source's scale and cut out by rows.

    The 1 km mask is sampled at pixel centres of a grid of at most ~250 m cells (sampling it
    finer than its own pixels adds nothing); :meth:`rows` repeats those cells to the output
    pixels of any strip of rows, so a grid processed strip by strip gets the same sea as a
    grid processed whole.
    """

    def __init__(self, grid: Grid) -> None:
        try:
            from global_land_mask import globe  # lazy: loads a 1 km global raster, only with land_sea_mask
        except ImportError as exc:  # pragma: no cover - a pinned requirement
            raise InvalidParameter(
                "land_sea_mask needs the global-land-mask package: run `pip install -r requirements.txt`."
            ) from exc
        self.grid = grid
        self.step = step = max(1, int(250.0 // grid.resolution_m))
        h, w = grid.shape
        rows = np.arange(0, h, step) + min(step, h) / 2.0
        cols = np.arange(0, w, step) + min(step, w) / 2.0
        cc, rr = np.meshgrid(cols, rows)
        t = grid.transform
        xs, ys = t.c + cc * t.a, t.f + rr * t.e
        to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
        lon, lat = to_ll.transform(xs, ys)
        lon = (np.asarray(lon) + 180.0) % 360.0 - 180.0
        self.coarse: np.ndarray = ~globe.is_land(np.clip(lat, -89.999, 89.999), lon)
        self.near: Optional[np.ndarray] = None  # coarse cells within COAST_BUFFER_M of the sea
        if self.coarse.any():
            cells = max(1, int(np.ceil(COAST_BUFFER_M / (step * grid.resolution_m))))
            self.near = ndimage.binary_dilation(self.coarse, structure=np.ones((3, 3), bool), iterations=cells)
        self._cols = np.arange(w) // step

    def rows(self, r0: int, r1: int, scl: Optional[np.ndarray] = None) -> np.ndarray:
        """Boolean (r1 - r0, W): True where rows ``r0:r1`` of the grid are sea; ``scl`` (the same rows
        of the Scene Classification Layer) refines the coast."""
        cells = np.ix_(np.arange(r0, r1) // self.step, self._cols)
        sea = self.coarse[cells]
        if scl is not None and self.near is not None and scl.shape == sea.shape:
            sea |= self.near[cells] & (scl == SCL_WATER)
        return sea


def sea_mask(grid: Grid, scl: Optional[np.ndarray] = None) -> np.ndarray:
    """Boolean (H, W): True where ``grid`` pixels are sea (see :class:`SeaMask`)."""
    return SeaMask(grid).rows(0, grid.height, scl)


def land_sea_nodata(grid: Grid, mode: LandSeaMode, scl: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Boolean (H, W) of the pixels ``mode`` sets to NoData, or None for ``none``."""
    if mode == "none":
        return None
    if mode not in ("land", "sea"):
        raise InvalidParameter(f"land_sea_mask={mode!r} is not none, land or sea.")
    sea = sea_mask(grid, scl)
    return ~sea if mode == "land" else sea
