"""COGs put together from GDAL's compressed tiles (s2core.write.cog_assembly): the layout that GDAL's COG
validator asks for, rio-cogeo's validator, GDAL's reading of it (``LAYOUT=COG``, every level), classic and BigTIFF alike, and
GDAL's COG driver taking over when the sources cannot be assembled."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

import s2core.write.cog as cog
from s2core.model.grid import Grid
from s2core.write.cog import cog_strip_writer
from s2core.write.cog_assembly import CannotAssemble, assemble_cog
from tests.conftest import RKH, needs_shared

META = dict(nodata=0, descriptions=["B02", "B03", "B04"], scales=[1e-4] * 3, offsets=[-0.1] * 3,
            tags={"ACQUISITION": "20200219"}, band_tags=[{"WAVELENGTH": w} for w in ("490", "560", "665")])


def _real_bands(height: int = 1300, width: int = 1500) -> np.ndarray:
    """Three real 29RKH bands resampled to ``height`` x ``width``, a nodata corner cut into them."""
    bands = []
    for band in ("B02", "B03", "B04"):
        with rasterio.open(RKH / f"{band}.tif") as src:
            bands.append(src.read(1, out_shape=(height, width), resampling=rasterio.enums.Resampling.bilinear))
    data = np.stack(bands).astype(np.uint16)
    rows, cols = np.indices((height, width))
    data[:, rows + cols < 400] = 0  # a swath edge
    return data


def _grid(data: np.ndarray) -> Grid:
    return Grid("EPSG:32629", Affine(10, 0, 199980, 0, -10, 2800020), data.shape[2], data.shape[1])


def _stream(path: Path, data: np.ndarray, rows: int = 384) -> None:
    with cog_strip_writer(path, _grid(data), data.shape[0], "uint16", **META) as dst:
        for r0 in range(0, data.shape[1], rows):
            r1 = min(data.shape[1], r0 + rows)
            dst.write(data[:, r0:r1], window=Window(0, r0, data.shape[2], r1 - r0))


def layout_errors(path: Path) -> list[str]:
    """What GDAL's validate_cloud_optimized_geotiff.py checks of the byte layout, and the tiles' leaders
    and trailers that the ghost area announces."""
    errors = []
    raw = path.read_bytes()
    with tifffile.TiffFile(path) as tif:
        head = 16 if tif.is_bigtiff else 8
        if not raw[head:].startswith(b"GDAL_STRUCTURAL_METADATA_SIZE="):
            errors.append("no ghost area after the header")
        ifds = [p.offset for p in tif.pages]
        data = [p.dataoffsets for p in tif.pages]
        counts = [p.databytecounts for p in tif.pages]
    if ifds != sorted(ifds):
        errors.append(f"IFDs out of order: {ifds}")
    first_tile = min(o for offsets in data for o in offsets if o)
    if max(ifds) > first_tile:
        errors.append("an IFD after the first tile")
    starts = [min(o for o in offsets if o) for offsets in data]
    if any(starts[k] < starts[k + 1] for k in range(len(starts) - 1)):
        errors.append(f"a level's tiles before a smaller level's: {starts}")
    for offsets, sizes in zip(data, counts):
        if list(offsets) != sorted(offsets):
            errors.append("tiles not in row-major order")
        for o, n in zip(offsets, sizes):
            if struct.unpack("<I", raw[o - 4:o])[0] != n or raw[o + n:o + n + 4] != raw[o + n - 4:o + n]:
                errors.append(f"tile at {o}: leader or trailer wrong")
                break
    return errors


@needs_shared
def test_streamed_cog_has_gdals_layout_and_reads_back_exactly(tmp_path: Path):
    data = _real_bands()
    path = tmp_path / "raster.tif"
    _stream(path, data)
    assert layout_errors(path) == []
    assert cog_validate(str(path), strict=True) == (True, [], [])  # rio-cogeo's validator: no error, no warning
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.profile["compress"] == "deflate" and ds.profile["interleave"] == "pixel"
        assert ds.overviews(1) == [2, 4]  # halved until it fits one 512² block, as GDAL's AUTO
        assert (ds.crs.to_epsg(), ds.transform, ds.nodata) == (32629, _grid(data).transform, 0)
        assert list(ds.descriptions) == META["descriptions"] and list(ds.offsets) == META["offsets"]
        assert ds.tags()["ACQUISITION"] == "20200219" and ds.tags(3)["WAVELENGTH"] == "665"
        np.testing.assert_array_equal(ds.read(), data)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_bigtiff  # 4 GB or less: a classic TIFF, as GDAL's COG driver writes it
        geo = [{t.code for t in p.tags.values()} & {33550, 33922, 34735} for p in tif.pages]
        assert geo[0] == {33550, 33922, 34735} and all(not g for g in geo[1:])  # georeferencing on the main IFD
        assert [p.tags["NewSubfileType"].value for p in tif.pages[1:]] == [1, 1]


@needs_shared
def test_bigtiff_and_classic_assemblies_hold_the_same_levels(tmp_path: Path):
    data = _real_bands(700, 1100)
    src = tmp_path / "stream"
    src.mkdir()
    opts = dict(cog.tile_options("uint16", cog.RasterMeta()), driver="GTiff", dtype="uint16", count=3, nodata=0,
                crs="EPSG:32629", tiled=True, blockxsize=512, blockysize=512)
    levels = [data, data[:, 0:700:2, 0:1100:2], data[:, 0:700:4, 0:1100:4]]
    paths = []
    for k, level in enumerate(levels):
        paths.append(tmp_path / "stream" / f"l{k}.tif")
        with rasterio.open(paths[-1], "w", width=level.shape[2], height=level.shape[1],
                           transform=Affine(10 * 2 ** k, 0, 0, 0, -10 * 2 ** k, 0), **opts) as ds:
            ds.write(level)
    for big in (False, True):
        out = tmp_path / f"big{big}.tif"
        assemble_cog(paths[0], paths[1:], out, bigtiff=big)
        assert layout_errors(out) == []
        assert cog_validate(str(out), strict=True) == (True, [], [])
        with tifffile.TiffFile(out) as tif:
            assert tif.is_bigtiff is big
        with rasterio.open(out) as ds:
            assert ds.overviews(1) == [2, 4] and ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            for k, level in enumerate(levels):
                with rasterio.open(out, overview_level=k - 1) if k else rasterio.open(out) as lv:
                    np.testing.assert_array_equal(lv.read(), level)


def test_sources_that_are_not_tiled_are_refused_and_gdal_writes_the_cog(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    striped = tmp_path / "striped.tif"
    data = (np.arange(3 * 600 * 700, dtype=np.uint32) % 4000 + 1).astype(np.uint16).reshape(3, 600, 700)
    with rasterio.open(striped, "w", driver="GTiff", width=700, height=600, count=3, dtype="uint16") as ds:
        ds.write(data)
    with pytest.raises(CannotAssemble, match="not tiled"):
        assemble_cog(striped, [], tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()

    def refuse(full: Path, levels: list[Path], dest: Path) -> None:
        raise CannotAssemble("refused by the test")

    monkeypatch.setattr(cog, "assemble_cog", refuse)
    path = tmp_path / "raster.tif"
    _stream(path, data, rows=200)
    with rasterio.open(path) as ds:  # GDAL's COG driver, from the same compressed tiles and levels
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1) == [2]
        np.testing.assert_array_equal(ds.read(), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raster.tif", "striped.tif"]  # no scratch file left
