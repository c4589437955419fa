"""Land/sea masking to NoData over a real coastal scene (the St. Lawrence estuary, 19UDP, L1C)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from s2core.model.classes import SCL_WATER
from s2core.errors import InvalidParameter
from s2core.model.grid import Grid
from s2core.stack.land_sea import SeaMask, land_sea_nodata, sea_mask
from s2core.run.safe_runs import preprocess_safe
from tests.conftest import needs_shared
from tests.safe_products import build_udp_l1c

pytestmark = needs_shared


@pytest.fixture(scope="module")
def coastal_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    root = tmp_path_factory.mktemp("coast")
    safe = build_udp_l1c(root / "in")
    out = {}
    for mode in ("none", "land", "sea"):
        results = preprocess_safe([safe], resolution=900, bands="B03,B04,B08", land_sea_mask=mode,
                                  out_dir=root, run_id=f"ls-{mode}")
        acq = results[0].manifest.acquisitions[0]
        with rasterio.open(root / f"ls-{mode}" / acq.outputs["raster"]) as ds:
            out[mode] = ds.read()
            out[f"{mode}-tag"] = ds.tags().get("LAND_SEA_MASK")
        with rasterio.open(root / f"ls-{mode}" / acq.outputs["product_mask"]) as pm:
            out[f"{mode}-pm"] = pm.read(1)
    return out


def test_land_and_sea_masks_split_the_scene_where_the_water_is(coastal_runs):
    full, land_masked, sea_masked = coastal_runs["none"], coastal_runs["land"], coastal_runs["sea"]
    valid = (full != 0).all(axis=0)
    kept_sea = (land_masked != 0).all(axis=0)  # land set to NoData: the sea is left
    kept_land = (sea_masked != 0).all(axis=0)
    assert valid.mean() > 0.55  # the tile is 37 % orbit-edge nodata
    # every valid pixel is kept by exactly one of the two masks; kept pixels are unchanged
    np.testing.assert_array_equal(kept_sea ^ kept_land, valid)
    np.testing.assert_array_equal(land_masked[:, kept_sea], full[:, kept_sea])
    np.testing.assert_array_equal(sea_masked[:, kept_land], full[:, kept_land])
    assert 0.1 < kept_sea.sum() / valid.sum() < 0.6  # the estuary is a large part of the swath
    # an independent check: water is dark in the NIR (B08), land is bright
    nir = full[2].astype(float)
    assert np.median(nir[kept_sea]) < 0.5 * np.median(nir[kept_land])
    # the product mask is NoData wherever the raster is
    assert (coastal_runs["land-pm"][~kept_sea] == 0).all() and (coastal_runs["sea-pm"][~kept_land] == 0).all()
    assert coastal_runs["land-tag"] == "land" and coastal_runs["none-tag"] is None


def test_scl_water_refines_the_coast_but_not_inland_lakes():
    """On a 100 m grid across a coast, SCL water next to the 1 km sea becomes sea; a lake far inland does not."""
    # 19UDP: the estuary's south shore near 48.5 N, 68.6 W (UTM 19N)
    grid = Grid("EPSG:32619", Affine(100, 0, 455000, 0, -100, 5375000), 300, 300)
    base = sea_mask(grid)
    assert 0.05 < base.mean() < 0.95
    scl = np.full(grid.shape, 4, np.uint8)  # vegetation
    from scipy import ndimage

    land_near_coast = ndimage.binary_dilation(base, iterations=5) & ~base
    far_inland = ~ndimage.binary_dilation(base, iterations=40)
    assert land_near_coast.any() and far_inland.any()
    scl[land_near_coast | far_inland] = SCL_WATER
    refined = sea_mask(grid, scl)
    assert refined[land_near_coast].all()
    assert not refined[far_inland].any()
    assert (refined | ~base).all()  # the 1 km sea stays sea
    np.testing.assert_array_equal(land_sea_nodata(grid, "sea", scl), refined)
    # strip by strip (as large rasters are written), rows of any height give the same sea
    sea = SeaMask(grid)
    cuts = [0, 1, 37, 100, 256, 300]
    strips = [sea.rows(r0, r1, scl[r0:r1]) for r0, r1 in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(np.concatenate(strips), refined)
    np.testing.assert_array_equal(land_sea_nodata(grid, "land", scl), ~refined)
    assert land_sea_nodata(grid, "none") is None
    with pytest.raises(InvalidParameter, match="none, land or sea"):
        land_sea_nodata(grid, "coast")  # type: ignore[arg-type]


def test_bad_land_sea_value_is_refused(tmp_path: Path):
    from s2core import make_request

    with pytest.raises(InvalidParameter, match="land_sea_mask"):
        make_request(aoi="POLYGON((0 0,0.1 0,0.1 0.1,0 0.1,0 0))", start="2020-01-01", end="2020-01-02",
                     land_sea_mask="ocean")
