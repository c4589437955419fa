"""Output projection (geographic EPSG:4326, equal-area EPSG:3035) and non-GeoTIFF output formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from s2core import make_request, preprocess
from s2core.errors import InvalidParameter
from s2core.model.grid import METRES_PER_DEGREE
from tests.conftest import INSIDE_TWM_WKT, MAPCHETE, MAPCHETE_CATALOG, ROOT, needs_shared

pytestmark = needs_shared
B04 = MAPCHETE / "sentinel-2-l2a" / "S2B_33TWM_20230813_0_L2A" / "B04.tif"


def _run(tmp_path: Path, **kw):
    req = make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-13", catalog=str(MAPCHETE_CATALOG),
                       out_dir=tmp_path, bands="B02,B03,B04,B08", resolution=120, **kw)
    manifest = preprocess(req)
    acq = manifest.acquisitions[0]
    return manifest, acq, tmp_path / manifest.run_id


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3035"])
def test_reprojection_matches_gdal_warp_of_the_band(crs: str, tmp_path: Path):
    manifest, acq, run = _run(tmp_path, crs=crs)
    with rasterio.open(run / acq.outputs["raster"]) as ds:
        assert ds.crs.to_epsg() == int(crs.split(":")[1])
        if crs == "EPSG:4326":
            assert ds.res[0] == pytest.approx(120 / METRES_PER_DEGREE) and ds.res[0] == pytest.approx(ds.res[1])
        else:
            assert ds.res == (120.0, 120.0)
        out = ds.read(3)
        ref = np.full(out.shape, np.nan, np.float32)
        with rasterio.open(B04) as src:
            reproject(rasterio.band(src, 1), ref, src_nodata=0, dst_nodata=np.nan, dst_transform=ds.transform,
                      dst_crs=ds.crs, resampling=Resampling.bilinear)
    valid = np.isfinite(ref) & (out > 0)
    assert valid.mean() > 0.8
    diff = np.abs(out[valid].astype(np.int32) - np.rint(ref[valid]).astype(np.int32))
    assert diff.max() <= 1  # the same warp as GDAL's; Earth Search items already removed the offset
    assert manifest.grid["crs"] == crs


@pytest.mark.parametrize("driver,ext", [("ENVI", "dat"), ("netCDF", "nc"), ("HFA", "img")])
def test_other_output_formats_hold_the_same_pixels(driver: str, ext: str, tmp_path: Path):
    _, acq, run = _run(tmp_path, output_format=driver.lower())
    export = run / acq.outputs["raster_export"]
    assert export.name == f"raster.{ext}" and export.exists()
    assert not list(run.glob(f"{acq.id}/.*tmp"))  # the temporary folder is gone
    with rasterio.open(run / acq.outputs["raster"]) as cog:
        expected = cog.read()
        transform = cog.transform
    if driver == "netCDF":  # one variable per band
        with rasterio.open(export) as nc:
            subs = nc.subdatasets
        assert len(subs) == 4
        for i, sub in enumerate(subs):
            with rasterio.open(sub) as ds:
                np.testing.assert_array_equal(ds.read(1), expected[i])
                assert ds.crs.to_epsg() == 32633 and ds.transform.almost_equals(transform)
    else:
        with rasterio.open(export) as ds:
            assert ds.driver == driver and ds.count == 4 and ds.crs.to_epsg() == 32633
            np.testing.assert_array_equal(ds.read(), expected)
    import json

    item = json.loads((run / acq.outputs["item"]).read_text())
    assert item["assets"]["raster_export"]["href"] == export.name
    for sidecar in (run / acq.id).glob("raster.hdr"):  # ENVI/EHdr headers name the file, never a server path
        assert str(tmp_path) not in sidecar.read_text(encoding="latin-1")


def test_output_format_errors_are_explained(tmp_path: Path):
    base = dict(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-13", bands="B02,B03,B04,B08")
    with pytest.raises(InvalidParameter, match="'FOO' is not a GDAL raster driver"):
        make_request(output_format="FOO", **base)
    with pytest.raises(InvalidParameter, match="'GPKG' cannot write a 4-band uint16 raster"):
        make_request(output_format="gpkg", **base)
    assert make_request(output_format="gtiff", **base).output_format == "GTiff"
    done = subprocess.run([sys.executable, "-m", "s2core", "preprocess", "--aoi", INSIDE_TWM_WKT, "--start",
                           "2023-08-13", "--end", "2023-08-13", "--catalog", str(MAPCHETE_CATALOG), "--bands",
                           "B02,B03,B04,B08", "--output-format", "SAGA", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "SAGA" in done.stderr and "Traceback" not in done.stderr
