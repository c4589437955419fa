"""Overviews built from streamed strips: the same levels, values and metadata as GDAL's own overview pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from s2core.model.grid import Grid
from s2core.write.cog import cog_strip_writer, write_cog
from s2core.write.overviews import overview_sizes


META = dict(nodata=0, scales=[1e-4] * 2, offsets=[0.0] * 2, tags={"X": "1"})


def _write_both(tmp_path: Path, data: np.ndarray, resampling: str, strip: int) -> tuple[Path, Path]:
    """The raster streamed by strips (our overviews) and the same file remade by GDAL's COG driver
    computing its own overviews (``OVERVIEWS=IGNORE_EXISTING``)."""
    count, height, width = data.shape
    grid = Grid("EPSG:32633", Affine(10, 0, 500000, 0, -10, 4000000), width, height)
    meta = dict(META, scales=[1e-4] * count, offsets=[0.0] * count, descriptions=[f"b{i}" for i in range(count)],
                band_tags=[{"BAND": f"B{i}"} for i in range(count)], overview_resampling=resampling)
    streamed, gdal = tmp_path / f"s_{resampling}.tif", tmp_path / f"g_{resampling}.tif"
    with cog_strip_writer(streamed, grid, count, str(data.dtype), **meta) as dst:
        for r0 in range(0, height, strip):
            r1 = min(height, r0 + strip)
            dst.write(data[:, r0:r1], window=Window(0, r0, width, r1 - r0))
    rio_copy(str(streamed), str(gdal), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE="512",
             OVERVIEWS="IGNORE_EXISTING", OVERVIEW_RESAMPLING=resampling.upper())
    return streamed, gdal


@pytest.mark.parametrize("resampling", ["average", "nearest"])
def test_streamed_overviews_equal_gdals_on_even_sizes(tmp_path: Path, resampling: str):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 5000, (2, 1536, 1280)).astype(np.uint16)
    data[:, 100:301, 200:233] = 0  # nodata holes: left out of the averages
    streamed, gdal = _write_both(tmp_path, data, resampling, strip=333)  # odd strips: rows wait for the next
    with rasterio.open(streamed) as a, rasterio.open(gdal) as b:
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        assert a.descriptions == ("b0", "b1") and a.scales == (1e-4, 1e-4) and a.nodata == 0
        assert a.tags()["X"] == "1" and a.tags(1)["BAND"] == "B0"
        assert a.profile == b.profile
    for level in range(2):
        with rasterio.open(streamed, OVERVIEW_LEVEL=level) as a, rasterio.open(gdal, OVERVIEW_LEVEL=level) as b:
            assert np.array_equal(a.read(), b.read()), level
            assert a.transform == b.transform


def test_odd_sizes_get_gdals_levels_and_a_valid_file(tmp_path: Path):
    data = np.random.default_rng(1).integers(1, 255, (1, 1533, 1201)).astype(np.uint8)
    streamed, gdal = _write_both(tmp_path, data, "average", strip=1024)
    with rasterio.open(streamed) as a, rasterio.open(gdal) as b:
        assert a.overviews(1) == b.overviews(1)
        for level in range(len(a.overviews(1))):
            with rasterio.open(streamed, OVERVIEW_LEVEL=level) as oa, rasterio.open(gdal, OVERVIEW_LEVEL=level) as ob:
                assert oa.shape == ob.shape
                assert abs(float(oa.read().mean()) - float(ob.read().mean())) < 2
    assert overview_sizes(10980, 10980) == [(5490, 5490), (2745, 2745), (1372, 1372), (686, 686), (343, 343)]
    assert overview_sizes(512, 512) == [] and overview_sizes(2000, 3) == [(1000, 1), (500, 1)]
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.vrt"))  # no scratch left behind
    grid = Grid("EPSG:32633", Affine(10, 0, 500000, 0, -10, 4000000), 1201, 1533)
    write_cog(tmp_path / "whole.tif", data[0], grid, nodata=0)  # a whole array: one strip, same overviews
    with rasterio.open(tmp_path / "whole.tif") as w, rasterio.open(streamed) as a:
        assert w.overviews(1) == a.overviews(1) and np.array_equal(w.read(1), a.read(1))
        assert np.array_equal(w.read(1, out_shape=(383, 300)), a.read(1, out_shape=(383, 300)))
