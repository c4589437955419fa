"""tiles_server.rendering: read a Web Mercator tile with rio-tiler and draw it as an RGBA PNG."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
from morecantile import TileMatrixSet
from morecantile import tms as TMS
from rasterio.warp import transform_bounds
from rio_tiler.constants import WEB_MERCATOR_TMS
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.utils import render

from tiles_server.layers import OUTSIDE, Layer, categorical_lut, continuous_lut, disagreement, normalized_difference, ramp

#: GDAL settings for every read: no directory listing next to the file. (The block cache size is
#: process-wide, set once at start-up: changing it per request would flush the cache every time.)
READ_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
#: zlib level of the PNGs: 1 encodes 3x faster than the default 6 for about 25 % more bytes.
PNG_ZLEVEL = 1


@dataclass(frozen=True)
class Style:
    """The knobs a client may turn (all optional; the layer's defaults apply)."""

    rescale: Optional[tuple[float, float]] = None
    colormap: Optional[str] = None
    minimum: Optional[float] = None
    opacity: float = 1.0


def reader_options(layer: Layer) -> dict[str, object]:
    """rio-tiler Reader options: class layers that draw nodata read it as data (outside = OUTSIDE)."""
    return {"nodata": OUTSIDE} if layer.kind == "categorical" and layer.draw_nodata else {}


@contextmanager
def open_layer(path: Path, tms: TileMatrixSet = WEB_MERCATOR_TMS,
               options: Optional[dict[str, object]] = None) -> Iterator[Reader]:
    """A rio-tiler Reader over ``path``, opened with the GeoTIFF driver only (no VRT, no network)."""
    with rasterio.Env(**READ_ENV), rasterio.open(path, driver="GTiff") as ds, \
            Reader(None, dataset=ds, tms=tms, options=options or {}) as reader:
        yield reader


@functools.lru_cache(maxsize=256)
def _native_minzoom(path: str, stamp: int, tms_id: str) -> int:
    with open_layer(Path(path), TMS.get(tms_id)) as reader:
        return int(reader.minzoom)


def native_minzoom(path: Path, tms: TileMatrixSet = WEB_MERCATOR_TMS) -> int:
    """The coarsest zoom at which the layer's own overviews still cover a tile (cached per file version)."""
    return _native_minzoom(str(path), path.stat().st_mtime_ns, tms.id)


def read_tile(layer: Layer, path: Path, bands: list[str], tms: TileMatrixSet,
              x: int, y: int, z: int, tilesize: int, versus: Optional[Path] = None) -> ImageData:
    """The tile's pixels (nearest resampling, so class values and probabilities stay exact); a comparison
    layer reads ``versus`` too and gives the :func:`~tiles_server.layers.disagreement` codes."""
    with open_layer(path, tms, reader_options(layer)) as src:
        if z < native_minzoom(path, tms):
            image = _far_out_tile(src, tms, x, y, z, tilesize, layer.band_indexes(bands))
        else:
            image = src.tile(x, y, z, tilesize=tilesize, indexes=layer.band_indexes(bands))
    if versus is None:
        return image
    with open_layer(versus, tms, reader_options(layer)) as other_src:
        other = other_src.tile(x, y, z, tilesize=tilesize, indexes=(1,))
    codes = disagreement(np.asarray(image.array.data[0]), np.asarray(other.array.data[0]))
    inside = (image.mask > 0) & (other.mask > 0)
    codes[~inside] = OUTSIDE
    return ImageData(np.ma.MaskedArray(codes[np.newaxis], mask=~inside[np.newaxis]), assets=image.assets,
                     bounds=image.bounds, crs=image.crs)


def _far_out_tile(src: Reader, tms: TileMatrixSet, x: int, y: int, z: int, tilesize: int,
                  indexes: tuple[int, ...]) -> ImageData:
    """A tile much larger than the raster (below its native zoom): only the part of the tile the raster
    covers is read, at the tile's pixel size, and placed on an empty tile. rio-tiler's ``tile`` warps the
    whole tile extent there, which took 1.1 s for a zoom-3 tile of a 4-band whole-tile COG (7 ms this way)."""
    tile = tms.xy_bounds(x, y, z)
    left, bottom, right, top = transform_bounds(src.crs, tms.rasterio_crs, *src.bounds, densify_pts=21)
    per_m = tilesize / (tile.right - tile.left)
    c0, c1 = max(0, math.floor((left - tile.left) * per_m)), min(tilesize, math.ceil((right - tile.left) * per_m))
    r0, r1 = max(0, math.floor((tile.top - top) * per_m)), min(tilesize, math.ceil((tile.top - bottom) * per_m))
    if c1 <= c0 or r1 <= r0:
        raise TileOutsideBounds(f"tile {z}/{x}/{y} does not touch the layer")
    box = (tile.left + c0 / per_m, tile.top - r1 / per_m, tile.left + c1 / per_m, tile.top - r0 / per_m)
    part = src.part(box, dst_crs=tms.rasterio_crs, bounds_crs=tms.rasterio_crs, width=c1 - c0, height=r1 - r0,
                    indexes=indexes)
    data = np.zeros((len(indexes), tilesize, tilesize), dtype=part.array.dtype)
    mask = np.ones_like(data, dtype=bool)
    data[:, r0:r1, c0:c1] = part.array.data
    mask[:, r0:r1, c0:c1] = np.ma.getmaskarray(part.array)
    return ImageData(np.ma.MaskedArray(data, mask=mask), assets=part.assets,
                     bounds=(tile.left, tile.bottom, tile.right, tile.top), crs=tms.rasterio_crs)


def _stretch(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (data.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def draw(layer: Layer, image: ImageData, style: Style) -> np.ndarray:
    """RGBA (4, H, W) uint8 for ``image`` drawn as ``layer`` with ``style``."""
    data = np.asarray(image.array.data)
    valid = image.mask > 0
    alpha = np.where(valid, round(255 * style.opacity), 0).astype(np.uint8)
    if layer.kind == "categorical":
        values = np.where(valid, data[0], OUTSIDE).astype(np.uint8)
        return np.moveaxis(categorical_lut(layer, style.opacity)[values], -1, 0)
    if layer.kind == "continuous":
        values = np.where(valid, data[0], layer.nodata if layer.nodata is not None else 255).astype(np.uint8)
        minimum = layer.default_min if style.minimum is None else style.minimum
        lut = continuous_lut(layer, style.colormap or layer.colormap, minimum, style.opacity)
        return np.moveaxis(lut[values], -1, 0)
    lo, hi = style.rescale or layer.rescale
    if layer.kind == "index":
        index = normalized_difference(data[0].astype(np.float32), data[1].astype(np.float32))
        rgba = np.moveaxis(ramp(style.colormap or layer.colormap)[_stretch(index, lo, hi)], -1, 0).copy()
        rgba[3] = alpha
        return rgba
    return np.concatenate([_stretch(data, lo, hi), alpha[np.newaxis]])


def png(rgba: np.ndarray) -> bytes:
    """Encode RGBA as PNG with rio-tiler's encoder."""
    return render(rgba[:3], mask=rgba[3], img_format="PNG", ZLEVEL=PNG_ZLEVEL)
