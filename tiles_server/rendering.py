"""tiles_server.rendering: read a Web Mercator tile of a run's file (GDAL warps it at the tile's own pixel size,
from pooled open datasets) and draw it as an RGBA PNG or WebP."""

from __future__ import annotations

import functools
import io
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
import rasterio.crs
import rasterio.io
from morecantile import TileMatrixSet
from morecantile import tms as TMS
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rio_tiler.constants import WEB_MERCATOR_TMS
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData

from tiles_server.layers import (
    OUTSIDE,
    Layer,
    categorical_lut,
    continuous_lut,
    disagreement,
    normalized_difference,
    ramp,
)

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


def outside_fill(layer: Layer) -> Optional[int]:
    """The value of pixels outside the file: :data:`OUTSIDE` for class layers that draw their nodata class
    (which is then data), else None (the file's own nodata)."""
    return OUTSIDE if layer.kind == "categorical" and layer.draw_nodata else None


def reader_options(layer: Layer) -> dict[str, object]:
    """rio-tiler Reader options that read ``layer`` as :func:`read_tile` does (:func:`outside_fill`)."""
    fill = outside_fill(layer)
    return {} if fill is None else {"nodata": fill}


@contextmanager
def open_layer(path: Path, tms: TileMatrixSet = WEB_MERCATOR_TMS,
               options: Optional[dict[str, object]] = None) -> Iterator[Reader]:
    """A rio-tiler Reader over ``path``, opened with the GeoTIFF driver only (no VRT, no network)."""
    with rasterio.Env(**READ_ENV), rasterio.open(path, driver="GTiff") as ds, \
            Reader(None, dataset=ds, tms=tms, options=options or {}) as reader:
        yield reader


#: A file version: inode, modification time and size (a rewritten or replaced file is another version).
Stamp = tuple[int, int, int]


def stamp(path: Path) -> Stamp:
    """The version of the file at ``path``: caches and open datasets are per version."""
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


#: The most source pixels one tile may read, at the overview level chosen for it. A tile of a run's own files
#: reads at most about (2 x tile size x 1.5)² (the finest overview not coarser than the tile, Web Mercator's
#: stretch); one that would need more (a file without overviews seen from far out) is refused, not read.
MAX_SOURCE_PIXELS = 2048 * 2048


class TileTooCostly(TileOutsideBounds):
    """A tile that would read more than :data:`MAX_SOURCE_PIXELS` source pixels (answered 404, in milliseconds)."""


class DatasetPool:
    """Open datasets kept between requests, so that GDAL's block cache serves the next tiles too.

    GDAL caches decoded blocks per open dataset and drops them when it is closed: a tile server that opens
    its file per request decodes every block again for every tile (5.9 ms per 512² block of a 4-band
    DEFLATE raster here, most of a tile's cost). A dataset is used by one thread at a time; up to
    ``per_key`` are open per (file version, level), the least recently used idle ones beyond ``keys``
    are closed.
    """

    def __init__(self, per_key: int = 4, keys: int = 32) -> None:
        self.per_key, self.keys = per_key, keys
        self.opened = 0  # datasets opened so far (the others were reused)
        self._cond = threading.Condition()
        self._free: OrderedDict[tuple[str, Stamp, int], list[rasterio.io.DatasetReader]] = OrderedDict()
        self._count: dict[tuple[str, Stamp, int], int] = {}

    @contextmanager
    def dataset(self, path: Path, version: Stamp, level: int) -> Iterator[rasterio.io.DatasetReader]:
        """An open dataset of ``path`` (``version``, see :func:`stamp`) at ``level`` (0: full resolution,
        i: overview i-1)."""
        key = (str(path), version, level)
        with self._cond:
            while True:
                free = self._free.setdefault(key, [])
                self._free.move_to_end(key)
                if free:
                    ds = free.pop()
                    break
                if self._count.get(key, 0) < self.per_key:
                    self._count[key] = self._count.get(key, 0) + 1
                    ds = None
                    break
                self._cond.wait()
        try:
            if ds is None:
                options = {"overview_level": level - 1} if level else {}
                with rasterio.Env(**READ_ENV):
                    ds = rasterio.open(path, driver="GTiff", **options)
                with self._cond:
                    self.opened += 1
            yield ds
        except BaseException:
            if ds is not None:
                ds.close()  # a dataset that failed a read is not handed out again
            with self._cond:
                self._count[key] -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._free.setdefault(key, []).append(ds)
            self._evict()
            self._cond.notify_all()

    def _evict(self) -> None:
        newest = next(reversed(self._free), None)  # the key just used
        for key in list(self._free):
            # beyond the limit, or an older version of the file just used (a run rewritten: free its old file)
            stale = newest is not None and key[0] == newest[0] and key[1] != newest[1]
            if len(self._free) <= self.keys and not stale:
                continue
            if len(self._free[key]) == self._count.get(key, 0):  # nobody is using it
                for ds in self._free.pop(key):
                    ds.close()
                self._count.pop(key, None)

    def close(self) -> None:
        """Close every idle dataset."""
        with self._cond:
            for key in list(self._free):
                for ds in self._free.pop(key):
                    ds.close()
                    self._count[key] -= 1


#: The process's open datasets for tiles (one per process: GDAL's block cache is process-wide too).
POOL = DatasetPool(per_key=max(2, os.cpu_count() or 2))


@dataclass(frozen=True)
class _FileInfo:
    crs: rasterio.crs.CRS
    nodata: Optional[float]
    levels: tuple[float, ...]  # pixel size (file units) at full resolution, then at each overview
    bounds: tuple[float, float, float, float]  # the file's footprint in the tile matrix set's CRS
    scale: float  # file units per unit of the tile matrix set's CRS, there (Web Mercator's stretch)
    minzoom: int  # rio-tiler's: the coarsest zoom at which the file's own overviews still cover a tile


@functools.lru_cache(maxsize=256)
def _file_info(path: str, version: Stamp, tms_id: str) -> _FileInfo:
    """What tiles need to know of a file version (one open per version)."""
    tms = TMS.get(tms_id)
    with open_layer(Path(path), tms) as reader:
        ds = reader.dataset
        bounds = transform_bounds(ds.crs, tms.rasterio_crs, *ds.bounds, densify_pts=21)
        levels = tuple(abs(ds.transform.a) * f for f in (1, *ds.overviews(1)))
        scale = (ds.bounds.right - ds.bounds.left) / (bounds[2] - bounds[0])
        return _FileInfo(ds.crs, ds.nodata, levels, bounds, scale, int(reader.minzoom))


def native_minzoom(path: Path, tms: TileMatrixSet = WEB_MERCATOR_TMS) -> int:
    """The coarsest zoom at which the layer's own overviews still cover a tile (cached per file version)."""
    return _file_info(str(path), stamp(path), tms.id).minzoom


def _warp(path: Path, tms: TileMatrixSet, x: int, y: int, z: int, tilesize: int, indexes: tuple[int, ...],
          fill: Optional[int]) -> ImageData:
    """One tile of ``path``, warped by GDAL at the tile's own pixel size with nearest resampling (class values
    and probabilities stay exact), from the finest level (full resolution or an overview) not coarser than the
    tile's pixels, and only over the part of the tile that the file covers. ``fill`` marks pixels outside the
    file (default: the file's nodata); they are masked.

    rio-tiler's ``tile()`` warps at the file's resolution, then decimates, and over the whole tile extent:
    18.5 ms for a zoom-12 tile of a 10 m raster against 2.6 ms this way (block cache warm), 1.1 s for a zoom-3
    one."""
    version = stamp(path)
    info = _file_info(str(path), version, tms.id)
    tile = tms.xy_bounds(x, y, z)
    per_unit = tilesize / (tile.right - tile.left)
    left, bottom, right, top = info.bounds
    c0, c1 = max(0, math.floor((left - tile.left) * per_unit)), min(tilesize, math.ceil((right - tile.left) * per_unit))
    r0, r1 = max(0, math.floor((tile.top - top) * per_unit)), min(tilesize, math.ceil((tile.top - bottom) * per_unit))
    if c1 <= c0 or r1 <= r0:
        raise TileOutsideBounds(f"tile {z}/{x}/{y} is outside the layer's bounds")
    needed = info.scale / per_unit  # the tile's pixel size in the file's units
    level = max(i for i, res in enumerate(info.levels) if i == 0 or res <= needed * 1.001)
    cost = (c1 - c0) * (r1 - r0) * (needed / info.levels[level]) ** 2  # source pixels under the part read
    if cost > MAX_SOURCE_PIXELS:
        raise TileTooCostly(f"tile {z}/{x}/{y} would read about {cost / 1e6:.0f} M source pixels (the limit is "
                            f"{MAX_SOURCE_PIXELS / 1e6:.0f} M; the file has no overview that coarse): zoom in")
    nodata = fill if fill is not None else (info.nodata if info.nodata is not None else 0)
    with POOL.dataset(path, version, level) as ds:
        data = np.full((len(indexes), tilesize, tilesize), nodata, dtype=ds.dtypes[indexes[0] - 1])
        part = (tile.left + c0 / per_unit, tile.top - r1 / per_unit, tile.left + c1 / per_unit, tile.top - r0 / per_unit)
        # src_nodata = the fill: pixels equal to it are not drawn; a class layer drawing its nodata class
        # passes a fill that no class uses, so its nodata pixels are data. A WarpedVRT, not reproject(): its
        # read lets other threads run while GDAL decodes and warps; rasterio's reproject() holds the interpreter
        with WarpedVRT(ds, crs=tms.rasterio_crs, transform=from_bounds(*part, c1 - c0, r1 - r0), width=c1 - c0,
                       height=r1 - r0, resampling=Resampling.nearest, src_nodata=nodata, nodata=nodata) as vrt:
            data[:, r0:r1, c0:c1] = vrt.read(list(indexes))
    return ImageData(np.ma.MaskedArray(data, mask=data == nodata), bounds=tuple(tile), crs=tms.rasterio_crs)


def read_tile(layer: Layer, path: Path, bands: list[str], tms: TileMatrixSet,
              x: int, y: int, z: int, tilesize: int, versus: Optional[Path] = None) -> ImageData:
    """The tile's pixels (see :func:`_warp`); a comparison layer reads ``versus`` too and gives the
    :func:`~tiles_server.layers.disagreement` codes."""
    fill = outside_fill(layer)
    image = _warp(path, tms, x, y, z, tilesize, layer.band_indexes(bands), fill)
    if versus is None:
        return image
    other = _warp(versus, tms, x, y, z, tilesize, (1,), fill)
    codes = disagreement(np.asarray(image.array.data[0]), np.asarray(other.array.data[0]))
    inside = (image.mask > 0) & (other.mask > 0)
    codes[~inside] = OUTSIDE
    return ImageData(np.ma.MaskedArray(codes[np.newaxis], mask=~inside[np.newaxis]), bounds=image.bounds,
                     crs=image.crs)


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


class TileFormat(str, Enum):
    """The image formats of tiles."""

    png = "png"
    webp = "webp"

    @property
    def media_type(self) -> str:
        """The format's MIME type."""
        return f"image/{self.value}"


def encode(rgba: np.ndarray, format: TileFormat = TileFormat.png) -> bytes:
    """Encode RGBA (4, H, W) with Pillow: PNG at zlib level :data:`PNG_ZLEVEL`, or lossless WebP.

    On a 256² tile of imagery: PNG 4.2 ms and 106 kB, lossless WebP (fastest method) 1.6 ms and 73 kB; both
    let a second thread run meanwhile. rio-tiler's GDAL PNG encoder took 6.1 ms and held the interpreter, so
    that tiles were encoded one at a time whatever the cores."""
    out = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(np.moveaxis(rgba, 0, -1)), "RGBA")
    if format is TileFormat.webp:
        image.save(out, "WEBP", lossless=True, method=0, quality=0)
    else:
        image.save(out, "PNG", compress_level=PNG_ZLEVEL)
    return out.getvalue()
