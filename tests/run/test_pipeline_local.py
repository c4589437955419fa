"""End-to-end preprocessing on real Sentinel-2 data through a local static STAC catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from s2core import make_request, preprocess
from s2core.errors import NoAcquisitionCovers, NoItemsFound
from s2core.model.classes import CLEAR, CLOUD, NODATA, SHADOW, product_mask_from_scl
from s2core.model.grid import Grid, aoi_pixels
from tests.conftest import INSIDE_TWM_WKT, MAPCHETE, MAPCHETE_CATALOG, STRADDLE_WKT, needs_shared

pytestmark = needs_shared
ITEMS = MAPCHETE / "sentinel-2-l2a"


def _run(tmp_path: Path, aoi: str, **kw):
    req = make_request(aoi=aoi, start=kw.pop("start", "2023-08-01"), end=kw.pop("end", "2023-08-31"),
                       catalog=str(MAPCHETE_CATALOG), bands=kw.pop("bands", "B02,B03,B04,B08"),
                       out_dir=tmp_path, **kw)
    events = []
    manifest = preprocess(req, progress=events.append)
    return req, manifest, tmp_path / manifest.run_id, events


@pytest.fixture(scope="module")
def straddle(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("straddle"), STRADDLE_WKT)


def _direct(path: Path, grid_ds, resampling=Resampling.nearest, dtype=np.float32):
    """Direct read of one source file onto the output grid (reference values)."""
    with rasterio.open(path) as src:
        dst = np.zeros((grid_ds.height, grid_ds.width), dtype=dtype)
        reproject(rasterio.band(src, 1), dst, src_nodata=0, dst_nodata=0, dst_transform=grid_ds.transform,
                  dst_crs=grid_ds.crs, resampling=resampling)
    return dst


def test_straddling_aoi_mosaics_both_tiles_without_seam(straddle):
    req, manifest, run_dir, events = straddle
    assert manifest.status == "completed"
    assert [a.id for a in manifest.acquisitions] == [
        "20230810_S2B_R079", "20230813_S2B_R122", "20230815_S2A_R079", "20230818_S2A_R122", "20230820_S2B_R079"]
    for acq in manifest.acquisitions:
        assert sorted(acq.tiles) == ["33TWL", "33TWM"] and len(acq.items) == 2
        with rasterio.open(run_dir / acq.outputs["raster"]) as ds:
            data = ds.read()
            # the tile boundary (33TWL top edge, 5100000 m N) runs through the grid: no nodata row there
            row = int((ds.transform.f - 5100000) / 10)
            assert 5 < row < ds.height - 5
            band_valid = data[:, row - 3: row + 3, :] != 0
            assert band_valid.all(), f"nodata seam at the tile boundary in {acq.id}"
            assert acq.valid_fraction == pytest.approx(1.0, abs=1e-3) or acq.id.endswith("R122")
    # progress went forward to 1.0 with readable messages
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == 1.0 and any("read B04" in e.message for e in events)


def test_mosaic_values_equal_direct_reads(straddle):
    req, manifest, run_dir, _ = straddle
    acq = next(a for a in manifest.acquisitions if a.id == "20230815_S2A_R079")
    with rasterio.open(run_dir / acq.outputs["raster"]) as ds:
        out = ds.read(3)  # B04
        twm = _direct(ITEMS / "S2A_33TWM_20230815_0_L2A" / "B04.tif", ds, Resampling.bilinear)
        twl = _direct(ITEMS / "S2A_33TWL_20230815_0_L2A" / "B04.tif", ds, Resampling.bilinear)
    first_tile = acq.tiles[0]
    primary, secondary = (twl, twm) if first_tile == "33TWL" else (twm, twl)
    expected = np.where(primary > 0, primary, secondary)
    valid = expected > 0
    # Earth Search already removed the offset (earthsearch:boa_offset_applied) -> values unchanged
    diff = np.abs(out[valid].astype(np.int32) - np.rint(expected[valid]).astype(np.int32))
    assert np.percentile(diff, 99) <= 1 and diff.max() <= 2
    assert (out[~valid] == 0).all()


def test_product_mask_counts_equal_direct_nearest_read(straddle):
    _, manifest, run_dir, _ = straddle
    acq = next(a for a in manifest.acquisitions if a.id == "20230810_S2B_R079")  # the cloudy date
    with rasterio.open(run_dir / acq.outputs["product_mask"]) as ds:
        mask = ds.read(1)
        twl = _direct(ITEMS / "S2B_33TWL_20230810_0_L2A" / "SCL.tif", ds, dtype=np.uint8)
        twm = _direct(ITEMS / "S2B_33TWM_20230810_0_L2A" / "SCL.tif", ds, dtype=np.uint8)
    with rasterio.open(run_dir / acq.outputs["raster"]) as ds:
        valid = np.all(ds.read() != 0, axis=0)
    primary, secondary = (twl, twm) if acq.tiles[0] == "33TWL" else (twm, twl)
    scl = np.where(primary > 0, primary, secondary)
    expected = product_mask_from_scl(scl)
    expected[~valid] = NODATA
    for code in (NODATA, CLEAR, CLOUD, SHADOW):
        assert (mask == code).sum() == (expected == code).sum()
    assert (mask == CLOUD).mean() > 0.2  # the cloudy date is cloudy
    # the manifest's figures are the AOI's (pixel centres inside the polygon), not its bounding box's
    with rasterio.open(run_dir / acq.outputs["product_mask"]) as ds:
        grid = Grid(ds.crs.to_string(), ds.transform, ds.width, ds.height)
    inside = aoi_pixels(straddle[0].aoi, grid)
    assert inside is not None and 0.5 < inside.mean() < 1.0  # a lon/lat square is no rectangle in EPSG:3035
    cloud_in_aoi = (mask[inside] == CLOUD).sum() / (mask[inside] != 0).sum()
    assert acq.product_mask_fractions["cloud"] == pytest.approx(cloud_in_aoi, abs=1e-5)
    assert abs(cloud_in_aoi - (mask == CLOUD).sum() / (mask != 0).sum()) > 1e-4  # and that differs here


def test_outputs_are_cogs_with_metadata_and_stac_items(straddle):
    req, manifest, run_dir, _ = straddle
    acq = manifest.acquisitions[0]
    with rasterio.open(run_dir / acq.outputs["raster"]) as ds:
        assert ds.dtypes == ("uint16",) * 4 and ds.nodata == 0
        assert ds.crs.to_epsg() == 32633 and ds.res == (10.0, 10.0)
        assert ds.descriptions[2].startswith("B04") and ds.scales == (1e-4,) * 4 and ds.offsets == (0.0,) * 4
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) and ds.tags()["BANDS"] == "B02,B03,B04,B08"
        assert ds.bounds.left == manifest.grid["bounds"][0]
    item = json.loads((run_dir / acq.outputs["item"]).read_text())
    import pystac

    stac = pystac.Item.from_dict(item)
    assert stac.id == acq.id and set(stac.assets) >= {"raster", "product_mask", "scl"}
    assert item["properties"]["proj:epsg"] == 32633 and len(item["assets"]["raster"]["eo:bands"]) == 4
    assert (run_dir / acq.id / stac.assets["raster"].href).exists()
    # manifest on disk = returned manifest; no temporary files left
    on_disk = json.loads((run_dir / "manifest.json").read_text())
    assert on_disk["status"] == "completed" and len(on_disk["acquisitions"]) == 5
    assert on_disk["versions"]["gdal"] and on_disk["timings"]["total_s"] > 0
    assert on_disk["parameters"]["bands"] == ["B02", "B03", "B04", "B08"]
    assert not list(run_dir.rglob("*.part"))


def test_aoi_inside_one_tile_reads_one_tile(tmp_path):
    _, manifest, run_dir, _ = _run(tmp_path, INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-15")
    assert [a.tiles for a in manifest.acquisitions] == [["33TWM"], ["33TWM"]]
    assert all(len(a.items) == 1 for a in manifest.acquisitions)


def test_orbit_edge_nodata(tmp_path):
    # across the R079 orbit edge of 33TWM: west of it there is no data on 10/15/20 Aug
    aoi = "POLYGON((15.1 46.45, 15.3 46.45, 15.3 46.55, 15.1 46.55, 15.1 46.45))"
    _, manifest, run_dir, _ = _run(tmp_path, aoi, min_tile_cover=0.3, start="2023-08-15", end="2023-08-18")
    by_id = {a.id: a for a in manifest.acquisitions}
    edge = by_id["20230815_S2A_R079"]
    full = by_id["20230818_S2A_R122"]
    assert 0.3 < edge.coverage < 0.9 and full.coverage == pytest.approx(1.0)
    assert edge.valid_fraction == pytest.approx(edge.coverage, abs=0.06)
    assert full.valid_fraction > 0.99
    with rasterio.open(run_dir / edge.outputs["raster"]) as ds:
        data = ds.read()
    with rasterio.open(run_dir / edge.outputs["product_mask"]) as ds:
        mask = ds.read(1)
    nodata = np.all(data == 0, axis=0)
    assert nodata[:, 0].all()  # the western column is outside the swath
    assert (mask[nodata] == NODATA).all()
    # at the swath edge bilinear bands reach half a source pixel (here 120 m) past nearest-resampled SCL
    assert (mask[~nodata] == NODATA).mean() < 0.05
    # a pixel has data in every band or in none
    partial = (data == 0).any(axis=0) & ~nodata
    assert not partial.any()


def test_default_bands_fail_clearly_when_assets_are_unreachable(tmp_path):
    # B01 etc. of these items point to remote URLs that cannot be reached here
    req = make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-13", catalog=str(MAPCHETE_CATALOG),
                       out_dir=tmp_path, dl_timeout=20, max_retries=1, bands="B01,B02")
    from s2core.errors import AssetReadError

    with pytest.raises(AssetReadError, match="B01 of S2B_33TWM_20230813_0_L2A"):
        preprocess(req)
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert manifest["status"] == "failed" and manifest["acquisitions"][0]["status"] == "failed"
    assert not list(tmp_path.rglob("*.tif"))
    run_dir = next(tmp_path.glob("*/manifest.json")).parent
    assert [p.name for p in run_dir.iterdir()] == ["manifest.json"]  # no folder, no scratch file left behind


def test_empty_search_and_no_cover(tmp_path):
    with pytest.raises(NoItemsFound, match="widen the date range"):
        _run(tmp_path, INSIDE_TWM_WKT, start="2022-01-01", end="2022-01-31")
    with pytest.raises(NoItemsFound):
        _run(tmp_path, "POLYGON((2 48, 2.1 48, 2.1 48.1, 2 48.1, 2 48))")
    with pytest.raises(NoAcquisitionCovers, match="lower min_tile_cover"):
        _run(tmp_path, STRADDLE_WKT, max_tiles_per_time=1)
    assert not any(tmp_path.iterdir())  # nothing written


def test_cancel_keeps_completed_outputs(tmp_path):
    from s2core import CancelToken
    from s2core.errors import Cancelled

    token = CancelToken()

    def progress(ev):
        if ev.stage == "write":
            token.cancel()

    req = make_request(aoi=INSIDE_TWM_WKT, start="2023-08-01", end="2023-08-31", catalog=str(MAPCHETE_CATALOG),
                       bands="B04", out_dir=tmp_path)
    with pytest.raises(Cancelled):
        preprocess(req, progress=progress, cancel=token)
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert manifest["status"] == "cancelled" and len(manifest["acquisitions"]) == 1
    assert (next(tmp_path.glob("*")) / manifest["acquisitions"][0]["outputs"]["raster"]).exists()
