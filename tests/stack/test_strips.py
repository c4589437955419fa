"""Large rasters are read, written and let go by strips of rows: the outputs equal a whole-grid run.

Whole-tile runs (a SAFE product without an AOI) hold one strip of the 12-band stack at a time
(s2core.stack.stacking.strips). These tests force strips on small real products and compare every output
with the same run made in one piece; they also check the fast upsampling read (GDAL's resampled
RasterIO from the asset's own pixels) against the warper it replaces, and the block-row cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window
from scipy import ndimage

from s2core import make_request, preprocess
from s2core.stack import stacking
from s2core.model.grid import Grid
from s2core.read.reader import BlockRowCache, read_to_grid
from s2core.run.safe_runs import preprocess_safe
from tests.conftest import MAPCHETE, MAPCHETE_CATALOG, needs_shared
from tests.safe_products import build_mapchete_l1c, build_rkh_l2a

pytestmark = needs_shared

#: across the R079 orbit edge of 33TWM (no data west of it on 15 Aug) and the 33TWL/33TWM boundary
EDGE_AOI = "POLYGON((15.02 45.93, 15.35 45.93, 15.35 46.33, 15.02 46.33, 15.02 45.93))"
EDGE_B04 = MAPCHETE / "sentinel-2-l2a" / "S2A_33TWM_20230815_0_L2A" / "B04.tif"


def _force_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stacking, "STACK_MEMORY", 1)  # every grid of more than 512 rows goes by strips
    monkeypatch.setattr(stacking, "STRIP_MEMORY", 1)  # of 512 rows (whole COG blocks)


def _outputs(run_dir: Path, acq) -> dict[str, np.ndarray]:
    out = {}
    for key in ("raster", "product_mask", "scl", "mask", "cloud_prob", "shadow_prob"):
        if key in acq.outputs:
            with rasterio.open(run_dir / acq.outputs[key]) as ds:
                out[key] = ds.read()
                out[key + ":tags"] = ds.tags()
                out[key + ":overviews"] = ds.overviews(1)
    return out


def _assert_same_runs(whole, strips, whole_dir: Path, strips_dir: Path) -> None:
    assert [a.id for a in whole.acquisitions] == [a.id for a in strips.acquisitions]
    for a, b in zip(whole.acquisitions, strips.acquisitions):
        assert a.status == b.status == "completed"
        assert (a.valid_fraction, a.product_mask_fractions, a.mask_fractions) == (
            b.valid_fraction, b.product_mask_fractions, b.mask_fractions)
        x, y = _outputs(whole_dir, a), _outputs(strips_dir, b)
        assert x.keys() == y.keys() and "raster" in x
        for key in x:
            if isinstance(x[key], np.ndarray):
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{a.id} {key}")
            else:
                assert x[key] == y[key], (a.id, key)


def test_whole_safe_tile_by_strips_equals_one_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """All 12 bands of 29RKH (20 m and 60 m bands upsampled 4x and 12x to a 50 m grid), by strips of 512 rows."""
    with rasterio.open(MAPCHETE.parent / "rio-tiler-pds-29RKH" / "S2A_29RKH_20200219_0_L2A" / "B02.tif") as ds:
        size = ds.width
    safe = build_rkh_l2a(tmp_path / "in", Window(0, 0, size, size))
    whole = preprocess_safe([safe], resolution=50, out_dir=tmp_path, run_id="whole")[0]
    grid = Grid(**{k: whole.manifest.grid[k] for k in ("crs", "width", "height")},
                transform=rasterio.Affine(*whole.manifest.grid["transform"]))
    _force_strips(monkeypatch)
    rows = stacking.strips(grid, 12)
    assert len(rows) >= 4 and rows[0] == (0, 512) and rows[-1][1] == grid.height
    events = []
    strips = preprocess_safe([safe], resolution=50, out_dir=tmp_path, run_id="strips", progress=events.append)[0]
    _assert_same_runs(whole.manifest, strips.manifest, tmp_path / "whole", tmp_path / "strips")
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # one bar across all strips
    assert not list((tmp_path / "strips").rglob("*.part"))  # no scratch file left behind


def test_mosaic_with_orbit_edge_and_masks_by_strips_equals_one_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two tiles mosaicked across the orbit edge (nodata in some strips: those fall back to the warper),
    120 m files upsampled 6x to 20 m, with the model masks computed from the whole raster in memory."""
    common = dict(aoi=EDGE_AOI, start="2023-08-15", end="2023-08-15", catalog=str(MAPCHETE_CATALOG), resolution=20,
                  bands="B02,B03,B04,B08", min_tile_cover=0.3, out_dir=tmp_path,
                  masks={"cloud_model": ["ukis-csmask-4b-l2a"], "in_memory": True})
    whole = preprocess(make_request(run_id="whole", **common))
    acq = whole.acquisitions[0]
    assert len(acq.tiles) == 2 and 0.5 < acq.valid_fraction < 0.99, acq  # both tiles, and the orbit edge inside
    _force_strips(monkeypatch)
    strips = preprocess(make_request(run_id="strips", **common))
    assert whole.grid["height"] > 1024  # three strips at least
    _assert_same_runs(whole, strips, tmp_path / "whole", tmp_path / "strips")


def test_l1c_with_msk_classi_by_strips_equals_one_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """L1C: the product mask comes from the real MSK_CLASSI_B00 (60 m, three planes) strip by strip."""
    safe = build_mapchete_l1c(tmp_path / "in")
    kw = dict(resolution=20, bands="B02,B03,B04,B08", out_dir=tmp_path)
    whole = preprocess_safe([safe], run_id="whole", **kw)[0].manifest
    assert whole.grid["height"] > 1024 and 0.05 < whole.acquisitions[0].product_mask_fractions["cloud"] < 0.95
    _force_strips(monkeypatch)
    strips = preprocess_safe([safe], run_id="strips", **kw)[0].manifest
    _assert_same_runs(whole, strips, tmp_path / "whole", tmp_path / "strips")


def _warped(src, grid: Grid, method: Resampling) -> np.ndarray:
    out = np.zeros(grid.shape, np.uint16)
    reproject(rasterio.band(src, 1), out, src_nodata=0, dst_nodata=0, dst_transform=grid.transform,
              dst_crs=grid.rio_crs, resampling=method, init_dest_nodata=True)
    return out


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
def test_whole_factor_upsampling_equals_the_warper(method: str):
    """A 120 m band on a 40 m grid that overhangs the tile, strip by strip: the warper's values (±1 DN),
    and exactly its nodata wherever the swath edge is (blocks near it are the warper's own)."""
    gdal_method = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear, "bicubic": Resampling.cubic}[method]
    with rasterio.open(EDGE_B04) as src:
        t = src.transform
        # 40 m pixels, starting 2 source pixels outside the tile (west and north), 1/3 pixel off the asset's pixels
        grid = Grid(src.crs.to_string(), rasterio.Affine(40, 0, t.c - 200, 0, -40, t.f + 280), 1200, 1400)
        expected = _warped(src, grid, gdal_method)
    cache = BlockRowCache()
    strips = [read_to_grid(str(EDGE_B04), grid.rows(r0, min(grid.height, r0 + 300)), resampling=method, as_dn=True,
                           cache=cache) for r0 in range(0, grid.height, 300)]
    got = np.concatenate(strips)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got == 0, expected == 0)  # nodata: outside the tile and west of the swath edge
    assert (got == 0).mean() > 0.1 and (got != 0).mean() > 0.5
    diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
    if method == "bicubic":  # near nodata and the tile's edge GDAL's warper has its own fallbacks (bilinear)
        near = ndimage.binary_dilation(expected == 0, iterations=3 * 4)  # 4 asset pixels
        assert (~near).mean() > 0.5
        diff[near] = 0
    assert diff.max() <= 1, method


def test_block_row_cache_gives_the_rows_of_a_plain_read():
    with rasterio.open(EDGE_B04) as src:
        assert src.block_shapes[0] == (512, 512)
        plain = src.read(1)
        cache = BlockRowCache()
        for r0 in range(0, src.height, 170):  # windows across the block boundary at row 512
            h = min(170 + 3, src.height - r0)
            got = cache.read(src, "b04", 1, Window(20, r0, 700, h))
            np.testing.assert_array_equal(got, plain[r0:r0 + h, 20:720])
        kept = cache._blocks[("b04", 1, 20, 700)]
        assert sorted(kept) == [1]  # rows above the latest request were let go
