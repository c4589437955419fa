"""s2core.write.overviews: COG overviews built while the strips of a raster stream in.

GDAL's COG driver computes overviews in a pass of its own after the full-resolution data is
written (for a whole 12-band tile about two thirds of the COG's time). Here every strip handed to
the writer is also halved into the first overview level, whose rows are halved into the next, and
so on: each level is a scratch GeoTIFF of compressed tiles written by strips, whose tiles the COG
gets as they are (:mod:`s2core.write.cog_assembly`; GDAL's COG copy, should that fail, takes them as
the source's overviews: a VRT with ``<Overview>`` elements, ``OVERVIEWS=FORCE_USE_EXISTING``).

The levels are the ones the COG driver makes with ``OVERVIEWS=AUTO`` (halving until the raster fits
one 512² block); ``average`` leaves nodata out of each 2 × 2 block and rounds to the nearest
integer, ``nearest`` takes the top-left pixel of each block.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
from affine import Affine
import numpy as np
import rasterio
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from s2core.runfolder.atomic import tmp_path

#: The COGs' internal block size (also where the overview levels stop).
BLOCK = 512


def overview_sizes(width: int, height: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """(width, height) of each overview level, as GDAL's COG driver makes them: halved (rounded down,
    at least 1) while either side exceeds ``block``."""
    sizes = []
    while width > block or height > block:
        width, height = max(1, width // 2), max(1, height // 2)
        sizes.append((width, height))
    return sizes


def halve(rows: np.ndarray, resampling: str, nodata: Optional[float]) -> np.ndarray:
    """One overview level of integer rows (bands, h, w): each 2 × 2 block → one pixel. An odd last row or
    column is left out (GDAL's overview sizes round down); a side of one pixel is repeated."""
    if rows.shape[1] == 1 or rows.shape[2] == 1:
        rows = np.repeat(np.repeat(rows, 2 if rows.shape[1] == 1 else 1, axis=1),
                         2 if rows.shape[2] == 1 else 1, axis=2)
    b, h, w = rows.shape
    rows = rows[:, : h // 2 * 2, : w // 2 * 2]
    if resampling == "nearest":
        return np.ascontiguousarray(rows[:, 0::2, 0::2])
    h2, w2 = rows.shape[1] // 2, rows.shape[2] // 2
    out = np.empty((b, h2, w2), dtype=rows.dtype)
    fill = nodata if nodata is not None else 0
    for i, band in enumerate(rows):
        holes = None if nodata is None else (band == nodata)
        if band.dtype not in (np.uint8, np.uint16):
            out[i] = _block_means(band, holes, fill, band.dtype)
            continue
        # OpenCV's 2 x 2 area average of 8/16-bit integers is (a + b + c + d + 2) >> 2: the mean below, exactly
        out[i] = cv2.resize(band, (w2, h2), interpolation=cv2.INTER_AREA)
        if holes is None or not holes.any():
            continue
        # blocks with nodata pixels (the edges of the data, in most real tiles): their mean over the others.
        # 64 per hole averages to 16 per hole: the count of holes of each block
        gone = cv2.resize(holes.view(np.uint8) * np.uint8(64), (w2, h2), interpolation=cv2.INTER_AREA) // 16
        out[i][gone == 4] = fill
        where = np.nonzero((gone > 0) & (gone < 4))  # a thin line along the edges of the data
        r, c = 2 * where[0], 2 * where[1]
        quad = [(r, c), (r + 1, c), (r, c + 1), (r + 1, c + 1)]
        total = sum(np.where(holes[q], 0, band[q].astype(np.int64)) for q in quad)
        count = 4 - gone[where].astype(np.int64)
        out[i][where] = np.where(count > 0, (total + count // 2) // np.maximum(count, 1), fill)
    return out


def _block_means(band: np.ndarray, holes: Optional[np.ndarray], fill: float, dtype: np.dtype) -> np.ndarray:
    """2 x 2 block means of valid pixels of any integer band, rounded half up (``fill`` where none is valid)."""
    if holes is None:
        holes = np.zeros(band.shape, dtype=bool)
    data = np.where(holes, 0, band).astype(np.int64)
    have = (~holes).astype(np.uint8)
    total = data[0::2, 0::2] + data[1::2, 0::2] + data[0::2, 1::2] + data[1::2, 1::2]
    count = have[0::2, 0::2] + have[1::2, 0::2] + have[0::2, 1::2] + have[1::2, 1::2]
    mean = (total + count // 2) // np.maximum(count, 1)
    return np.where(count > 0, mean, fill).astype(dtype)


class Pyramid:
    """The overview levels of a raster whose full-resolution rows arrive in order, top to bottom.

    Each level is a scratch GeoTIFF beside ``dest`` (removed by :meth:`discard`), made with GDAL's
    ``creation`` options (the COG's compressed tiles, from :func:`s2core.write.cog.tile_options`); rows
    that cannot be halved yet (an odd count) wait for the next strip.
    """

    def __init__(self, dest: Path, width: int, height: int, count: int, dtype: str, nodata: Optional[float],
                 resampling: str, crs: Any, transform: Affine, creation: Mapping[str, str]) -> None:
        self.resampling, self.nodata = resampling, nodata
        self.sizes = overview_sizes(width, height)
        self.heights = [height] + [h for _, h in self.sizes]
        self.paths: list[Path] = []
        self.files: list[Any] = []
        self.pending: list[Optional[np.ndarray]] = [None] * len(self.sizes)
        self.done = [0] * (len(self.sizes) + 1)  # rows received per level (0 = full resolution)
        try:
            for k, (w, h) in enumerate(self.sizes, start=1):
                path = tmp_path(dest.with_name(f"{dest.stem}.ovr{k}.tif"))
                self.paths.append(path)
                geo = {"crs": crs, "transform": transform @ Affine.scale(width / w, height / h)}
                self.files.append(rasterio.open(
                    path, "w", driver="GTiff", width=w, height=h, count=count, dtype=dtype, nodata=nodata, **geo,
                    tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                    **creation))
        except BaseException:
            self.discard()
            raise

    def add(self, rows: np.ndarray, level: int = 0) -> None:
        """The next rows (bands, n, width) of ``level``: halve what can be halved into ``level + 1``."""
        self.done[level] += rows.shape[1]
        if level >= len(self.sizes):
            return
        waiting = self.pending[level]
        if waiting is not None:
            rows = np.concatenate([waiting, rows], axis=1)
            self.pending[level] = None
        last = self.done[level] >= self.heights[level]
        even = rows.shape[1] if last else rows.shape[1] // 2 * 2  # the last odd row is left out by halve
        if even < rows.shape[1]:
            self.pending[level] = rows[:, even:].copy()
            rows = rows[:, :even]
        if rows.shape[1] == 0:
            return
        half = halve(rows, self.resampling, self.nodata)
        r0 = self.done[level + 1]
        self.files[level].write(half, window=Window(0, r0, half.shape[2], half.shape[1]))
        self.add(half, level + 1)

    def close(self) -> list[Path]:
        """Close the levels (all rows must have arrived); returns their files, finest first."""
        if self.done[0] != self.heights[0]:
            raise ValueError(f"{self.done[0]} of {self.heights[0]} rows were written")
        for f in self.files:
            f.close()
        return self.paths

    def discard(self) -> None:
        """Close and remove every level."""
        for f in self.files:
            if not f.closed:
                f.close()
        for p in self.paths:
            p.unlink(missing_ok=True)


def with_overviews(base: Path, levels: list[Path], vrt: Path) -> Path:
    """A VRT of ``base`` (every band, its metadata) with ``levels`` as each band's overviews."""
    rio_copy(str(base), str(vrt), driver="VRT")
    tree = ET.parse(vrt)
    for band in tree.getroot().iter("VRTRasterBand"):
        number = band.get("band")
        for level in levels:
            ov = ET.SubElement(band, "Overview")
            src = ET.SubElement(ov, "SourceFilename", relativeToVRT="0")
            src.text = str(level)
            ET.SubElement(ov, "SourceBand").text = number
    tree.write(vrt)
    return vrt
