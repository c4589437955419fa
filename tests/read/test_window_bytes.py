"""Bytes a windowed read over HTTP moves, against the physical limit (the file's header and the internal tiles
that the window touches), on a loopback server that counts every byte it sends."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.shutil import copy as rio_copy

from s2core.model.grid import Grid
from s2core.read.gdal_mem import open_array
from s2core.read.reader import read_to_grid
from tests.conftest import mapchete_items, needs_shared
from tests.servers import AssetServer

TILE = 1024


def _big_cog(dest: Path) -> Path:
    """A 4096² 10 m COG of real B04 pixels (upsampled, with noise that DEFLATE cannot squeeze away), in 1024²
    internal tiles of about 1.5 MB each, as Planetary Computer serves them."""
    src_path = next(p.parent for _, p in mapchete_items()) / "B04.tif"
    with rasterio.open(src_path) as src:
        data = src.read(1, out_shape=(4096, 4096), resampling=Resampling.bilinear)
        t, crs = src.transform, src.crs
    noise = np.random.default_rng(0).integers(0, 64, data.shape, dtype=np.uint16)
    data = np.where(data > 0, data + noise, 0).astype(np.uint16)
    with open_array(data[None], "r+") as ds:
        ds.crs, ds.transform, ds.nodata = crs, Affine(10, 0, t.c, 0, -10, t.f), 0
        rio_copy(ds, str(dest), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=str(TILE), OVERVIEWS="NONE")
    return dest


def _physical_limit(path: Path, col: int, row: int, width: int, height: int) -> int:
    with rasterio.open(path) as ds:
        tiles = [(x, y) for y in range(row // TILE, (row + height - 1) // TILE + 1)
                 for x in range(col // TILE, (col + width - 1) // TILE + 1)]
        data = sum(int(ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1)) for x, y in tiles)
        first = min(int(ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1))
                    for x in range(math.ceil(ds.width / TILE)) for y in range(math.ceil(ds.height / TILE)))
    return first + data


@needs_shared
def test_a_window_over_many_internal_tiles_fetches_them_and_little_else(tmp_path: Path):
    """12 internal tiles of ~1.5 MB: past GDAL's default 10 MB batch, the remaining tiles were read with
    /vsicurl/'s growing read-ahead (up to 2 MB past them each time)."""
    path = _big_cog(tmp_path / "B04.tif")
    col, row, size = 700, 900, 2300  # off the tile grid: 3 columns x 4 rows of internal tiles
    with rasterio.open(path) as ds:
        grid = Grid(ds.crs.to_wkt(), ds.transform @ Affine.translation(col, row), size, size)
        local = ds.read(1, window=((row, row + size), (col, col + size))).astype(np.float32)
    limit = _physical_limit(path, col, row, size, size)
    assert limit > 10 << 20, "the window must need more than GDAL's default batch of ranges"
    with AssetServer(tmp_path) as server:
        got = read_to_grid(f"{server.url}/files/B04.tif", grid)
        sent = server.counter.bytes_sent
    local[local == 0] = np.nan
    np.testing.assert_array_equal(got, local)
    assert sent <= 1.02 * limit, f"{sent:,} bytes sent for a limit of {limit:,}"
