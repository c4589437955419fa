"""All 12 bands on one grid (29RKH), and reflectances computed by hand for baselines 02.14 and 05.09."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from s2core import make_request, preprocess
from s2core.model.bands import EARTH_SEARCH_KEYS, L2A_BANDS
from tests.conftest import INSIDE_TWM_WKT, RKH, mapchete_items, needs_shared

pytestmark = needs_shared


def _local_rkh_item(tmp: Path) -> Path:
    item = json.loads((RKH / "S2A_29RKH_20200219_0_L2A.json").read_text())
    for band, key in EARTH_SEARCH_KEYS.items():
        if key in item["assets"] and (RKH / f"{band}.tif").exists():
            item["assets"][key]["href"] = str(RKH / f"{band}.tif")
    path = tmp / "item.json"
    path.write_text(json.dumps(item))
    return path


def test_all_twelve_bands_on_one_grid_match_direct_reads(tmp_path: Path):
    catalog = _local_rkh_item(tmp_path)
    with rasterio.open(RKH / "B02.tif") as ds:
        b = ds.bounds
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32629", "EPSG:4326", always_xy=True)
    x0, y0 = b.left + 30000, b.bottom + 30000
    lon0, lat0 = tr.transform(x0, y0)
    lon1, lat1 = tr.transform(x0 + 20000, y0 + 20000)
    aoi = f"POLYGON(({lon0} {lat0}, {lon1} {lat0}, {lon1} {lat1}, {lon0} {lat1}, {lon0} {lat0}))"
    req = make_request(aoi=aoi, start="2020-02-19", end="2020-02-19", catalog=str(catalog), out_dir=tmp_path,
                       resolution=100)  # the files are the tile downsampled 10x: 10 m bands are at 100 m
    manifest = preprocess(req)
    acq = manifest.acquisitions[0]
    with rasterio.open(tmp_path / manifest.run_id / acq.outputs["raster"]) as ds:
        assert ds.count == 12 and [d.split()[0] for d in ds.descriptions] == list(L2A_BANDS)
        assert ds.crs.to_epsg() == 32629 and ds.res == (100.0, 100.0)
        out = ds.read()
        for i, band in enumerate(L2A_BANDS):
            with rasterio.open(RKH / f"{band}.tif") as src:
                ref = np.zeros((ds.height, ds.width), np.float32)
                reproject(rasterio.band(src, 1), ref, src_nodata=0, dst_nodata=0, dst_transform=ds.transform,
                          dst_crs=ds.crs, resampling=Resampling.bilinear)
            # baseline 02.14: no offset; values equal a direct bilinear read
            diff = np.abs(out[i].astype(np.int32) - np.rint(ref).astype(np.int32))
            assert diff.max() <= 1, band
            assert out[i].min() > 0, band


def test_baseline_05_09_offset_computed_by_hand(tmp_path: Path):
    """Remove Earth Search's 'already harmonised' flag: the -1000 DN offset must then be applied."""
    cat = tmp_path / "cat"
    cat.mkdir()
    src_item, src_path = next((i, p) for i, p in mapchete_items() if i["id"] == "S2B_33TWM_20230813_0_L2A")
    raw = copy.deepcopy(src_item)
    raw["properties"].pop("earthsearch:boa_offset_applied")
    for a in raw["assets"].values():
        if not a["href"].startswith("http") and not a["href"].startswith("s3"):
            a["href"] = str(src_path.parent / a["href"])
    (cat / "item.json").write_text(json.dumps(raw))
    runs = {}
    for name, catalog in (("flagged", str(src_path)), ("raw", str(cat / "item.json"))):
        req = make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-13", catalog=catalog,
                           bands="B04,B08", out_dir=tmp_path / name, upsampling="nearest")
        m = preprocess(req)
        with rasterio.open(tmp_path / name / m.run_id / m.acquisitions[0].outputs["raster"]) as ds:
            runs[name] = ds.read().astype(np.int32)
            transform, crs, shape = ds.transform, ds.crs, (ds.height, ds.width)
    with rasterio.open(src_path.parent / "B08.tif") as src:
        dn = np.zeros(shape, np.float32)
        reproject(rasterio.band(src, 1), dn, src_nodata=0, dst_nodata=0, dst_transform=transform, dst_crs=crs,
                  resampling=Resampling.nearest)
    valid = dn > 0
    # harmonised item: reflectance x 10000 = DN
    assert np.array_equal(runs["flagged"][1][valid], dn[valid].astype(np.int32))
    # raw baseline 05.09 item: reflectance x 10000 = DN - 1000, clipped to >= 1
    expected = np.clip(dn[valid].astype(np.int32) - 1000, 1, None)
    assert np.array_equal(runs["raw"][1][valid], expected)
    # by hand for one pixel
    r, c = np.argwhere(valid)[len(np.argwhere(valid)) // 2]
    assert runs["raw"][1][r, c] == max(1, int(dn[r, c]) - 1000)
