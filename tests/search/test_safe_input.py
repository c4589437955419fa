"""SAFE product input (L2A and L1C, zipped or not): metadata, offsets, product masks, angles, bad input.

The products are built in the test from real metadata and real pixels (tests/safe_products.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import box

from s2core import make_request, preprocess
from s2core.errors import InvalidProduct, UnknownBand
from s2core.model.classes import CLOUD
from s2core.stack.product_mask import gml_cloud_polygons, product_mask_from_gml
from s2core.model.grid import Grid
from s2core.search.safe import locate_products, read_product
from s2core.run.safe_runs import preprocess_safe, safe_requests
from tests.conftest import ROOT, RKH, needs_shared
from tests.safe_products import (
    L1C_N0209, L1C_N0400, OFFSETS, SAFE_META, build_mapchete_l1c, build_offsets_l1c, build_rkh_l2a, zip_product,
)

pytestmark = needs_shared


def _run_dir(result) -> Path:
    return Path(result.manifest.parameters["out_dir"]) / result.run_id


def _aoi_inside(path: Path, margin: float) -> str:
    with rasterio.open(path) as ds:
        b, crs = ds.bounds, ds.crs
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon0, lat0 = tr.transform(b.left + margin, b.bottom + margin)
    lon1, lat1 = tr.transform(b.right - margin, b.top - margin)
    return box(lon0, lat0, lon1, lat1).wkt


@pytest.fixture(scope="module")
def rkh_products(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("safe")
    safe = build_rkh_l2a(root / "unzipped")
    return safe, zip_product(safe)


def test_metadata_of_real_products_matches_stactools_expectations():
    """Angles, platform, orbit, cloud cover and tile of real metadata equal the STAC items that
    stactools-sentinel2 made from the same products (expected_output.json beside them)."""
    checked = 0
    for folder in sorted(SAFE_META.glob("*.SAFE")):
        expected_file = folder / "expected_output.json"
        if not expected_file.exists() or not list(folder.glob("GRANULE/*/MTD_TL.xml")):
            continue
        expected = json.loads(expected_file.read_text())["properties"]
        product = read_product(folder, require_bands=False) if any(folder.glob("MTD_MSIL*.xml")) else None
        if product is None:
            continue
        props = product.scene().item["properties"]
        for key in ("view:sun_azimuth", "view:sun_elevation", "view:incidence_angle", "view:azimuth"):
            if key in expected:
                assert props[key] == pytest.approx(expected[key], abs=1e-5), (folder.name, key)
                checked += key == "view:sun_azimuth"
        assert props["eo:cloud_cover"] == pytest.approx(expected["eo:cloud_cover"], abs=1e-6), folder.name
        assert props["sat:relative_orbit"] == expected["sat:relative_orbit"], folder.name
        assert props["platform"] == expected["platform"], folder.name
        assert product.tile == expected["s2:mgrs_tile"] if "s2:mgrs_tile" in expected else True
        assert product.epsg == expected.get("proj:epsg", product.epsg), folder.name
    assert checked >= 7


def test_offsets_from_the_metadata():
    old = read_product(SAFE_META / "esa_S2B_MSIL2A_20210122T133229_N0214_R081_T22HBD_20210122T155500.SAFE",
                       require_bands=False)
    new = read_product(SAFE_META / "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE",
                       require_bands=False)
    assert old.level == new.level == "L2A" and old.baseline == 2.14 and new.baseline == 4.0
    assert set(old.offsets.values()) == {0.0}
    assert new.offsets["B02"] == new.offsets["B12"] == new.offsets["B8A"] == -1000.0


def test_safe_l2a_unzipped_and_zipped_equal_the_catalog_route(rkh_products, tmp_path: Path):
    """The same real pixels read from a SAFE folder, a SAFE zip and a STAC item give identical rasters."""
    safe, zipped = rkh_products
    aoi = _aoi_inside(next(safe.glob("GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2")), 1000)
    params = dict(resolution=200, bands="B02,B04,B05,B8A,B11,B01", out_dir=tmp_path)
    runs = []
    for product in (safe, zipped):
        results = preprocess_safe([product], aoi=aoi, run_id=f"r-{product.suffix.strip('.').lower()}", **params)
        assert results[0].error is None
        runs.append(_run_dir(results[0]) / results[0].manifest.acquisitions[0].outputs["raster"])
    item = json.loads((RKH / "S2A_29RKH_20200219_0_L2A.json").read_text())
    from s2core.model.bands import EARTH_SEARCH_KEYS

    for band, key in EARTH_SEARCH_KEYS.items():
        if key in item["assets"] and (RKH / f"{band}.tif").exists():
            item["assets"][key]["href"] = str(RKH / f"{band}.tif")
    (tmp_path / "item.json").write_text(json.dumps(item))
    m = preprocess(make_request(aoi=aoi, start="2020-02-19", end="2020-02-19", catalog=str(tmp_path / "item.json"),
                                run_id="stac", crs="EPSG:32629", grid_origin=(199980, 2800020), **params))
    runs.append(tmp_path / "stac" / m.acquisitions[0].outputs["raster"])
    arrays = []
    for path in runs:
        with rasterio.open(path) as ds:
            arrays.append(ds.read())
            assert ds.crs.to_epsg() == 32629 and ds.res == (200.0, 200.0)
    assert arrays[0].min() > 0 and arrays[0].shape[0] == 6
    np.testing.assert_array_equal(arrays[0], arrays[1])
    np.testing.assert_array_equal(arrays[0], arrays[2])


def test_whole_product_without_aoi_keeps_the_tile_grid_and_writes_angles(rkh_products, tmp_path: Path):
    safe, _ = rkh_products
    b02 = next(safe.glob("GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2"))
    results = preprocess_safe([safe], resolution=100, out_dir=tmp_path, bands="B02,B03,B04,B08")
    acq = results[0].manifest.acquisitions[0]
    with rasterio.open(b02) as src, rasterio.open(_run_dir(results[0]) / acq.outputs["raster"]) as out:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        np.testing.assert_array_equal(out.read(1), src.read(1))  # 100 m onto its own grid: the pixels as they are
        assert out.tags()["SUN_AZIMUTH"].startswith("64.9495")
    item = json.loads((_run_dir(results[0]) / acq.outputs["item"]).read_text())
    assert item["properties"]["view:sun_azimuth"] == pytest.approx(64.949524, abs=1e-5)
    assert item["properties"]["view:sun_elevation"] == pytest.approx(90 - 32.3712311857264, abs=1e-5)
    assert acq.valid_fraction == 1.0


@pytest.mark.parametrize("name,resolution", [(L1C_N0400, 10), (L1C_N0209, 60)])
def test_l1c_offsets_give_the_expected_toa(name: str, resolution: int, tmp_path: Path):
    """ukis-pysat's own vectors: N0209 TOA = DN/10000, N0400 TOA = (DN - 1000)/10000, all 13 bands."""
    safe = build_offsets_l1c(tmp_path / "in", name)
    aoi = _aoi_inside(OFFSETS / f"{name}.tif", 0.45 * resolution)  # the lon/lat box stays inside once projected
    results = preprocess_safe([safe], aoi=aoi, resolution=resolution, upsampling="nearest",
                              bands=",".join(["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                                              "B10", "B11", "B12"]), out_dir=tmp_path)
    m = results[0].manifest
    assert results[0].error is None and m.parameters["level"] == "L1C"
    acq = m.acquisitions[0]
    assert "scl" not in acq.outputs
    with rasterio.open(_run_dir(results[0]) / acq.outputs["raster"]) as out, \
            rasterio.open(OFFSETS / f"{name}_toa.tif") as toa:
        assert out.count == 13 and "top-of-atmosphere" in out.tags()["CONTENT"]
        win = toa.window(*out.bounds)
        expected = np.rint(toa.read(window=win, boundless=False) * 10000).astype(np.int64)
        assert expected.shape == (13, *out.shape) and out.width * out.height >= 0.6 * toa.width * toa.height
        with rasterio.open(OFFSETS / f"{name}.tif") as dn:
            nodata = (dn.read(window=win) == 0).any(axis=0)  # DN 0 is Sentinel-2's nodata, in any band
        got = out.read().astype(np.int64)
        np.testing.assert_array_equal(got[:, ~nodata], expected[:, ~nodata])
        assert (got[:, nodata] == 0).all()  # a pixel is valid in every band or in none
    with rasterio.open(_run_dir(results[0]) / acq.outputs["product_mask"]) as pm:
        # the product's mask has no cloud: clear wherever the raster has data, nodata elsewhere
        np.testing.assert_array_equal(pm.read(1), np.where(nodata, 0, 1))


def test_l1c_product_mask_from_msk_classi_and_l1c_models(tmp_path: Path):
    """A real MSK_CLASSI_B00 (cloudy 2023-08-10 over 33TWL) becomes the product mask; L1C models run."""
    safe = build_mapchete_l1c(tmp_path / "in")
    results = preprocess_safe([safe], resolution=120, out_dir=tmp_path, bands="B02,B03,B04,B08")
    acq = results[0].manifest.acquisitions[0]
    run = _run_dir(results[0])
    classi = next(safe.glob("GRANULE/*/QI_DATA/MSK_CLASSI_B00.jp2"))
    with rasterio.open(run / acq.outputs["product_mask"]) as pm, rasterio.open(classi) as cl:
        mask = pm.read(1)
        # flag_downsampling 'first': each 120 m pixel takes the top-left of its 2x2 60 m MSK_CLASSI pixels
        rows, cols = np.mgrid[0:pm.height, 0:pm.width]
        xs, ys = pm.xy(rows.ravel(), cols.ravel(), offset="ul")
        r, c = rasterio.transform.rowcol(cl.transform, np.asarray(xs) + 30, np.asarray(ys) - 30)
        planes = cl.read()
        flagged = ((planes[0][r, c] != 0) | (planes[1][r, c] != 0)).reshape(mask.shape)
        valid = mask != 0
        assert valid.mean() > 0.9
        np.testing.assert_array_equal(mask[valid] == CLOUD, flagged[valid])
        assert 0.05 < (mask[valid] == CLOUD).mean() < 0.95
    req = safe_requests([safe], resolution=120, masks={}, bands="B02,B03,B04,B08")[0]
    assert req.masks is not None and req.masks.cloud_model == ("ukis-csmask-4b-l1c",)
    with pytest.raises(Exception, match="L2A input but this raster is L1C"):
        safe_requests([safe], masks={"cloud_model": "ukis-csmask-4b-l2a"}, bands="B02,B03,B04,B08")


def test_old_gml_cloud_mask_is_rasterised():
    """The real vector MSK_CLOUDS_B00.gml of an 02.11 product: rasterised area = polygon area."""
    gml = next((SAFE_META / "S2A_MSIL2A_20181229T095411_N0211_R079_T33SVB_20181229T112231").rglob("MSK_CLOUDS_B00.gml"))
    data = gml.read_bytes()
    crs, polygons = gml_cloud_polygons(data)
    assert crs == "EPSG:32633" and len(polygons) == data.count(b"<eop:MaskFeature ") == 22 and {k for k, _ in polygons} <= {"OPAQUE", "CIRRUS"}
    from affine import Affine
    from shapely import union_all

    grid = Grid("EPSG:32633", Affine(20, 0, 399960, 0, -20, 4195200), 5046, 5154)
    mask = product_mask_from_gml(data, grid, np.ones(grid.shape, bool))
    area = union_all([p for _, p in polygons]).intersection(box(*grid.bounds)).area
    assert (mask == CLOUD).sum() * 400 == pytest.approx(area, rel=0.01)


def test_bad_inputs_get_clear_messages(rkh_products, tmp_path: Path):
    safe, zipped = rkh_products
    with pytest.raises(InvalidProduct, match="does not exist"):
        locate_products([tmp_path / "nope.SAFE"])
    (tmp_path / "empty.SAFE").mkdir()
    (tmp_path / "empty.SAFE" / "readme.txt").write_text("x")
    with pytest.raises(InvalidProduct, match="not a Sentinel-2 SAFE product.*no MTD_MSIL2A.xml"):
        locate_products([tmp_path / "empty.SAFE"])
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(zipped.read_bytes()[: zipped.stat().st_size // 3])
    with pytest.raises(InvalidProduct, match="not a readable zip.*truncated"):
        read_product(truncated)
    with pytest.raises(UnknownBand, match="B10 exists only in L1C"):
        preprocess_safe([safe], bands="B02,B10", out_dir=tmp_path)
    with pytest.raises(UnknownBand, match="B10 exists only in L1C"):
        make_request(aoi="POLYGON((0 0,0.1 0,0.1 0.1,0 0.1,0 0))", start="2020-01-01", end="2020-01-02", bands="B10")
    missing_band = tmp_path / "missing" / safe.name
    import shutil

    shutil.copytree(safe, missing_band)
    next(missing_band.glob("GRANULE/*/IMG_DATA/R20m/*_B05_20m.jp2")).unlink()
    results = preprocess_safe([missing_band], bands="B02,B05", out_dir=tmp_path)
    assert "has no asset for B05" in results[0].error and "drop that band" in results[0].error
    with pytest.raises(Exception, match="downsampling"):
        preprocess_safe([safe], downsampling="avg", out_dir=tmp_path)


def test_cli_input_batch_of_a_folder(rkh_products, tmp_path: Path):
    """`preprocess --input FOLDER` runs every product in it, one progress bar, exit 0; a bad folder exits 2."""
    safe, zipped = rkh_products
    folder = tmp_path / "products"
    folder.mkdir()
    (folder / zipped.name).write_bytes(zipped.read_bytes())
    l1c = build_offsets_l1c(tmp_path / "l1c", L1C_N0400)
    cmd = [sys.executable, "-m", "s2core", "preprocess", "--input", str(folder), "--resolution", "200",
           "--bands", "B02,B03,B04,B08", "--out", str(tmp_path / "runs")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifests = list((tmp_path / "runs").glob("*/manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["status"] == "completed"
    bad = subprocess.run([*cmd[:5], str(tmp_path / "runs"), *cmd[6:]], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "not a Sentinel-2 SAFE product" in bad.stderr and "Traceback" not in bad.stderr
    mixed = subprocess.run([*cmd[:5], str(folder), str(l1c), *cmd[6:]], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert mixed.returncode == 2 and "mix L1C and L2A" in mixed.stderr
