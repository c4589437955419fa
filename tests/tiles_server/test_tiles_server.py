"""The tile server, started with ``python -m tiles_server`` on loopback over real s2core outputs."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
import rasterio.warp
import requests
from PIL import Image
from pyproj import Transformer
from rio_tiler.colormap import cmap

from tests.conftest import ROOT, needs_shared
from tests.servers import TilesServer, free_port

pytestmark = needs_shared

TMS = morecantile.tms.get("WebMercatorQuad")
ALL_LAYERS = ("rgb", "falsecolor", "ndvi", "scl", "product_mask", "mask", "disagreement", "cloud_mask", "cloud_prob",
              "shadow_prob")
APP_ORIGIN = "http://localhost:8501"


@pytest.fixture(scope="module")
def server(masked_runs_root: Path):
    with TilesServer(masked_runs_root) as srv:
        yield srv


@pytest.fixture(scope="module")
def run_doc(server: TilesServer) -> dict[str, Any]:
    runs = requests.get(f"{server.url}/runs", timeout=30).json()
    return next(r for r in runs if r["run_id"] == "wide")


def _acq(run_doc: dict[str, Any], date: str) -> str:
    return next(a["id"] for a in run_doc["acquisitions"] if a["id"].startswith(date))


def _png(resp: requests.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGBA"))


def _homogeneous_pixel(arr: np.ndarray, value_test, r: int = 3) -> tuple[int, int]:
    """(row, col) of a pixel whose (2r+1)^2 neighbourhood all passes ``value_test``."""
    ok = value_test(arr)
    h, w = ok.shape
    for row in range(r, h - r):
        for col in range(r, w - r):
            if ok[row - r:row + r + 1, col - r:col + r + 1].all():
                return row, col
    raise AssertionError("no homogeneous pixel found")


def _tile_position(path: Path, row: int, col: int, z: int) -> tuple[morecantile.Tile, int, int]:
    """The Web Mercator tile holding raster pixel (row, col)'s centre and the pixel's place in it."""
    with rasterio.open(path) as ds:
        x, y = ds.xy(row, col)
        lon, lat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True).transform(x, y)
    tile = TMS.tile(lon, lat, z)
    b = TMS.xy_bounds(tile)
    mx, my = TMS.xy(lon, lat)
    return tile, int((b.top - my) / (b.top - b.bottom) * 256), int((mx - b.left) / (b.right - b.left) * 256)


def _read(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band)


def _tile_url(server: TilesServer, acq: str, layer: str, tile: morecantile.Tile, query: str = "") -> str:
    return f"{server.url}/runs/wide/{acq}/{layer}/tiles/{tile.z}/{tile.x}/{tile.y}.png{query}"


# --------------------------------------------------------------------------- runs and TileJSON


def test_health_and_runs_list_every_layer(server: TilesServer, run_doc: dict[str, Any], masked_runs_root: Path):
    health = requests.get(f"{server.url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["root_exists"] is True
    assert str(masked_runs_root) not in json.dumps(health)
    manifest = json.loads((masked_runs_root / "wide" / "manifest.json").read_text())
    assert [a["id"] for a in run_doc["acquisitions"]] == [a["id"] for a in manifest["acquisitions"]]
    assert len(run_doc["acquisitions"]) == 5
    for acq in run_doc["acquisitions"]:
        assert acq["status"] == "completed"
        assert sorted(acq["layers"]) == sorted(ALL_LAYERS)
    w, s, e, n = run_doc["bounds"]
    assert 15.5 < w < 15.7 and 16.3 < e < 16.5 and 45.6 < s < 45.8 and 46.3 < n < 46.5
    one = requests.get(f"{server.url}/runs/wide", timeout=10).json()
    assert one["run_id"] == "wide" and one["bands"] == ["B02", "B03", "B04", "B08"]


def test_tilejson_for_every_layer(server: TilesServer, run_doc: dict[str, Any]):
    acq = _acq(run_doc, "20230818")
    for layer in ALL_LAYERS:
        tj = requests.get(f"{server.url}/runs/wide/{acq}/{layer}/tilejson.json", params={"opacity": 0.7},
                          timeout=10).json()
        assert tj["tilejson"] == "3.0.0"
        assert tj["tiles"] == [f"{server.url}/runs/wide/{acq}/{layer}/tiles/{{z}}/{{x}}/{{y}}.png?opacity=0.7"]
        assert tj["bounds"] == pytest.approx(run_doc["bounds"], abs=1e-4)
        w, s, e, n = tj["bounds"]
        lon, lat, zoom = tj["center"]
        assert w < lon < e and s < lat < n and tj["minzoom"] <= zoom <= tj["maxzoom"]
        assert tj["legend"]["layer"] == layer


def test_tiles_for_every_layer_are_rgba_pngs(server: TilesServer, run_doc: dict[str, Any]):
    acq = _acq(run_doc, "20230818")
    tj = requests.get(f"{server.url}/runs/wide/{acq}/rgb/tilejson.json", timeout=10).json()
    lon, lat, _ = tj["center"]
    tile = TMS.tile(lon, lat, 11)
    for layer in ALL_LAYERS:
        img = _png(requests.get(_tile_url(server, acq, layer, tile), timeout=30))
        assert img.shape == (256, 256, 4)
        if layer not in ("mask", "cloud_mask"):  # mask is all cloud/shadow here, others have colour variety
            assert len(np.unique(img.reshape(-1, 4), axis=0)) > 2, layer
    big = _png(requests.get(_tile_url(server, acq, "rgb", tile, "?tilesize=512"), timeout=30))
    assert big.shape == (512, 512, 4)


def test_tiles_outside_bounds_are_404(server: TilesServer, run_doc: dict[str, Any]):
    acq = _acq(run_doc, "20230818")
    for tile in (TMS.tile(0.0, 0.0, 12), TMS.tile(-120.0, 40.0, 8)):
        resp = requests.get(_tile_url(server, acq, "mask", tile), timeout=10)
        assert resp.status_code == 404 and "outside" in resp.json()["detail"]
    assert requests.get(f"{server.url}/runs/wide/{acq}/mask/tiles/3/99/0.png", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/runs/wide/{acq}/mask/tiles/30/0/0.png", timeout=10).status_code == 400


# --------------------------------------------------------------------------- colours at known pixels


def test_mask_tiles_draw_cloud_in_the_legend_colour_and_clear_transparent(
        server: TilesServer, run_doc: dict[str, Any], masked_runs_root: Path):
    legend = requests.get(f"{server.url}/runs/wide/{_acq(run_doc, '20230815')}/mask/legend", timeout=10).json()
    colours = {c["label"]: c for c in legend["classes"]}
    assert colours["clear"]["opacity"] == 0 and colours["cloud"]["opacity"] == 1
    cloud_rgb = tuple(int(colours["cloud"]["color"][i:i + 2], 16) for i in (1, 3, 5))
    checked = set()
    for date in ("20230810", "20230815"):
        acq = _acq(run_doc, date)
        for layer in ("mask", "product_mask"):
            path = masked_runs_root / "wide" / acq / f"{layer}.tif"
            arr = _read(path)
            for code, name in ((2, "cloud"), (1, "clear")):
                try:
                    row, col = _homogeneous_pixel(arr, lambda a, c=code: a == c)
                except AssertionError:
                    continue
                tile, ty, tx = _tile_position(path, row, col, 13)
                px = _png(requests.get(_tile_url(server, acq, layer, tile), timeout=30))[ty, tx]
                if name == "cloud":
                    assert tuple(px[:3]) == cloud_rgb and px[3] == 255, (date, layer, px)
                else:
                    assert px[3] == 0, (date, layer, px)
                checked.add(name)
    assert checked == {"cloud", "clear"}


def test_disagreement_tiles_mark_model_only_and_product_only_pixels(
        server: TilesServer, run_doc: dict[str, Any], masked_runs_root: Path):
    """The disagreement layer reads both masks: a model-only pixel takes the legend's model-only colour, a
    product-only one the product-only colour, a pixel both call clear is transparent."""
    acq = _acq(run_doc, "20230810")
    legend = requests.get(f"{server.url}/runs/wide/{acq}/disagreement/legend", timeout=10).json()
    colours = {c["label"].split(" (")[0]: c for c in legend["classes"]}
    model = _read(masked_runs_root / "wide" / acq / "mask.tif")
    product = _read(masked_runs_root / "wide" / acq / "product_mask.tif")
    masked_m, masked_p = np.isin(model, (2, 3)), np.isin(product, (2, 3))
    cases = {"model only": masked_m & ~masked_p, "product only": masked_p & ~masked_m,
             "both clear": (model == 1) & (product == 1)}
    checked = set()
    for name, where in cases.items():
        try:
            row, col = _homogeneous_pixel(where, lambda a: a, r=2)
        except AssertionError:
            continue
        tile, ty, tx = _tile_position(masked_runs_root / "wide" / acq / "mask.tif", row, col, 13)
        px = _png(requests.get(_tile_url(server, acq, "disagreement", tile), timeout=30))[ty, tx]
        if name == "both clear":
            assert px[3] == 0, px
        else:
            rgb = tuple(int(colours[name]["color"][i:i + 2], 16) for i in (1, 3, 5))
            assert tuple(px[:3]) == rgb and px[3] == 255, (name, px)
        checked.add(name)
    assert {"model only", "both clear"} <= checked, checked
    assert requests.get(f"{server.url}/runs/wide/{acq}/disagreement/statistics", timeout=10).status_code == 404


def test_rgb_and_probability_tiles_follow_the_pixels(server: TilesServer, run_doc: dict[str, Any],
                                                     masked_runs_root: Path):
    acq = _acq(run_doc, "20230810")
    folder = masked_runs_root / "wide" / acq
    # rgb: red channel is B04 stretched 0..3000 DN -> 0..255
    b04 = _read(folder / "raster.tif", 3)
    row, col = _homogeneous_pixel(b04, lambda a: (a > 300) & (a < 2700), r=2)
    tile, ty, tx = _tile_position(folder / "raster.tif", row, col, 13)
    px = _png(requests.get(_tile_url(server, acq, "rgb", tile), timeout=30))[ty, tx]
    assert abs(int(px[0]) - round(b04[row, col] / 3000 * 255)) <= 1 and px[3] == 255
    half = _png(requests.get(_tile_url(server, acq, "rgb", tile, "?opacity=0.5"), timeout=30))[ty, tx]
    assert half[3] == 128 and tuple(half[:3]) == tuple(px[:3])

    prob = _read(folder / "cloud_prob.tif")
    for test, minimum in ((lambda a: (a >= 200) & (a <= 250), 0.5), (lambda a: a < 50, 0.5)):
        row, col = _homogeneous_pixel(prob, test, r=2)
        tile, ty, tx = _tile_position(folder / "cloud_prob.tif", row, col, 13)
        px = _png(requests.get(_tile_url(server, acq, "cloud_prob", tile, f"?min={minimum}"), timeout=30))[ty, tx]
        p = prob[row, col] / 250
        if p >= minimum:
            expected = cmap.get("magma")[int(round(p * 255))]
            assert tuple(px) == tuple(int(v) for v in expected), (p, px)
        else:
            assert px[3] == 0


# --------------------------------------------------------------------------- statistics and agreement


def test_statistics_are_exact_and_match_the_manifest(server: TilesServer, run_doc: dict[str, Any],
                                                      masked_runs_root: Path):
    for acq in run_doc["acquisitions"]:
        # the tile server counts the whole raster; the manifest counts the AOI's pixels (a lon/lat box is no
        # rectangle in UTM), so the reference here is the raster itself
        for layer, names in (("mask", ("clear", "cloud", "shadow")), ("product_mask", ("cloud",))):
            stats = requests.get(f"{server.url}/runs/wide/{acq['id']}/{layer}/statistics", timeout=30).json()
            assert stats["exact"] is True
            raster = _read(masked_runs_root / "wide" / acq["id"] / f"{layer}.tif")
            valid = raster[raster != 0]
            for name in names:
                code = {"clear": 1, "cloud": 2, "shadow": 3}[name]
                assert stats["percent_of_valid"][name] == pytest.approx(100 * float((valid == code).mean()), abs=1e-6)
            fractions = acq["mask_fractions" if layer == "mask" else "product_mask_fractions"]
            assert stats["percent_of_valid"]["cloud"] == pytest.approx(100 * fractions["cloud"], abs=1.0)
    acq = _acq(run_doc, "20230818")
    raw = _read(masked_runs_root / "wide" / acq / "cloud_prob.tif")
    valid = raw[raw != 255] / 250
    prob = requests.get(f"{server.url}/runs/wide/{acq}/cloud_prob/statistics", timeout=30).json()
    assert prob["valid_pixels"] == valid.size
    assert prob["mean"] == pytest.approx(float(valid.mean()), rel=1e-9)
    assert prob["above"]["0.3"] == pytest.approx(100 * float((valid > 0.3).mean()), rel=1e-9)
    assert sum(prob["histogram"]) == valid.size
    rgb = requests.get(f"{server.url}/runs/wide/{acq}/rgb/statistics", timeout=30).json()
    assert set(rgb["bands"]) == {"B04", "B03", "B02"} and rgb["bands"]["B04"]["p2"] < rgb["bands"]["B04"]["p98"]


def test_agreement_is_the_confusion_of_model_and_product_masks(server: TilesServer, run_doc: dict[str, Any],
                                                               masked_runs_root: Path):
    acq = _acq(run_doc, "20230810")
    doc = requests.get(f"{server.url}/runs/wide/{acq}/agreement", timeout=30).json()
    model = _read(masked_runs_root / "wide" / acq / "mask.tif")
    product = _read(masked_runs_root / "wide" / acq / "product_mask.tif")
    both = (model != 0) & (product != 0)
    assert doc["pixels"] == int(both.sum())
    m, p = model[both] == 2, product[both] == 2
    assert doc["iou"]["cloud"] == pytest.approx(float((m & p).sum() / (m | p).sum()), rel=1e-9)
    assert doc["overall"] == pytest.approx(float((model[both] == product[both]).mean()), rel=1e-9)
    assert doc["matrix"][doc["labels"].index("cloud")][doc["labels"].index("cloud")] == int((m & p).sum())


# --------------------------------------------------------------------------- parameters and CORS


@pytest.mark.parametrize("query, fragment", [
    ("?colormap=not-a-map", "colorMaps"),
    ("?rescale=abc", "rescale"),
    ("?rescale=3000,0", "greater"),
    ("?min=2", "min"),
    ("?opacity=-1", "opacity"),
    ("?tilesize=300", "tilesize"),
])
def test_bad_parameters_get_a_400_naming_them(server: TilesServer, run_doc: dict[str, Any], query: str,
                                              fragment: str):
    acq = _acq(run_doc, "20230818")
    tj = requests.get(f"{server.url}/runs/wide/{acq}/ndvi/tilejson.json", timeout=10).json()
    tile = TMS.tile(tj["center"][0], tj["center"][1], 11)
    resp = requests.get(_tile_url(server, acq, "ndvi", tile, query), timeout=10)
    assert resp.status_code == 400 and fragment in resp.json()["detail"], resp.text


def test_unknown_ids_and_layers_are_404(server: TilesServer, run_doc: dict[str, Any]):
    acq = _acq(run_doc, "20230818")
    for path, fragment in ((f"/runs/nope/{acq}/rgb/tilejson.json", "no run"),
                           ("/runs/wide/20990101_S2A_R001/rgb/tilejson.json", "no acquisition"),
                           (f"/runs/wide/{acq}/nope/tilejson.json", "unknown layer")):
        resp = requests.get(server.url + path, timeout=10)
        assert resp.status_code == 404 and fragment in resp.json()["detail"]


def test_cors_allows_the_app_origin_only(server: TilesServer, run_doc: dict[str, Any]):
    url = f"{server.url}/runs/wide/{_acq(run_doc, '20230818')}/mask/legend"
    ok = requests.get(url, headers={"Origin": APP_ORIGIN}, timeout=10)
    assert ok.headers.get("access-control-allow-origin") == APP_ORIGIN
    other = requests.get(url, headers={"Origin": "http://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers
    pre = requests.options(url, headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET"}, timeout=10)
    assert pre.status_code == 200 and pre.headers.get("access-control-allow-origin") == APP_ORIGIN


# --------------------------------------------------------------------------- the command line


def test_cli_rejects_a_missing_root_and_a_busy_port(tmp_path: Path, server: TilesServer):
    cmd = [sys.executable, "-m", "tiles_server", "--root", str(tmp_path / "nope"), "--port", str(free_port())]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "no such folder" in res.stderr and "Traceback" not in res.stderr
    cmd = [sys.executable, "-m", "tiles_server", "--root", str(tmp_path), "--port", str(server.port)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "choose another --port" in res.stderr


def test_empty_root_lists_no_runs(tmp_path: Path):
    with TilesServer(tmp_path) as srv:
        assert requests.get(f"{srv.url}/runs", timeout=10).json() == []
        shutil.rmtree(tmp_path)
        assert requests.get(f"{srv.url}/runs", timeout=10).json() == []
        assert requests.get(f"{srv.url}/healthz", timeout=10).json()["root_exists"] is False


# --------------------------------------------------------------------------- bounded work per request


@needs_shared
def test_tiles_far_below_the_native_zoom_are_refused_at_once(server: TilesServer, run_doc: dict[str, Any]):
    acq = run_doc["acquisitions"][0]["id"]
    tj = requests.get(f"{server.url}/runs/wide/{acq}/rgb/tilejson.json", timeout=30).json()
    lon, lat = tj["center"][:2]
    native = tj["minzoom"]
    for z in (0, 1, native - 5):
        t0 = time.monotonic()
        resp = requests.get(_tile_url(server, acq, "rgb", TMS.tile(lon, lat, max(0, z))), timeout=30)
        assert resp.status_code == 404 and "too far out" in resp.json()["detail"], resp.text
        assert time.monotonic() - t0 < 2.0  # was 89 s of CPU for a z0 tile of a 120 m run
    _png(requests.get(_tile_url(server, acq, "rgb", TMS.tile(lon, lat, native - 4)), timeout=60))


@pytest.mark.parametrize("layer", ["rgb", "mask"])
def test_tiles_give_rio_tilers_picture_at_every_zoom(layer: str, run_doc: dict[str, Any], masked_runs_root: Path):
    """Our tile read (the file's finest level not coarser than the tile, warped at the tile's pixel size, only
    where the file covers the tile) gives rio-tiler's picture: the same place, the same colours (composites) or
    classes (masks), from far below the native zoom to beyond full resolution."""
    from rio_tiler.io import Reader

    from tiles_server.layers import LAYERS, OUTSIDE
    from tiles_server.rendering import native_minzoom, read_tile, reader_options

    spec = LAYERS[layer]
    acq = run_doc["acquisitions"][0]["id"]
    path = masked_runs_root / "wide" / acq / f"{spec.role}.tif"
    bands = run_doc["bands"]
    native = native_minzoom(path, TMS)
    with rasterio.open(path) as ds:
        w, s, e, n = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    for z in (native - 3, native - 1, native, native + 2, native + 4):
        tile = TMS.tile((w + e) / 2, (s + n) / 2, z)
        ours = read_tile(spec, path, bands, TMS, tile.x, tile.y, tile.z, 256)
        with rasterio.open(path) as ds, Reader(None, dataset=ds, tms=TMS, options=reader_options(spec)) as reader:
            warped = reader.tile(tile.x, tile.y, tile.z, indexes=spec.band_indexes(bands))
        a, b = ~np.ma.getmaskarray(ours.array[0]), ~np.ma.getmaskarray(warped.array[0])
        if layer == "mask":  # outside pixels are OUTSIDE for both; the file's nodata class is data
            a, b = ours.array.data[0] != OUTSIDE, warped.array.data[0] != OUTSIDE
        assert a.sum() > 0 and abs(int(a.sum()) - int(b.sum())) <= 0.1 * b.sum() + 2 * (a.shape[0]), z  # same place
        both = a & b
        assert both.sum() >= 0.8 * b.sum(), z
        if layer == "mask":
            same = ours.array.data[0][both] == warped.array.data[0][both]
            assert same.mean() >= (0.999 if z >= native + 2 else 0.9), (z, same.mean())  # exact at full resolution
        else:
            mean_ours, mean_peer = float(ours.array[:, both].mean()), float(warped.array[:, both].mean())
            assert abs(mean_ours - mean_peer) < 0.05 * mean_peer, (z, mean_ours, mean_peer)  # the same colours


def test_a_tile_that_would_read_too_many_pixels_is_refused(tmp_path: Path):
    """A file without overviews seen from far out would be read whole for a few pixels: refused (a 404 naming
    the limit, in milliseconds); nearer zooms of the same file still draw."""
    from tiles_server.layers import LAYERS
    from tiles_server.rendering import MAX_SOURCE_PIXELS, TileTooCostly, read_tile

    path = tmp_path / "mask.tif"
    size = 4096  # 41 km at 10 m, no overviews
    data = np.tile(np.arange(6, dtype=np.uint8), (size, size // 6 + 1))[:, :size]
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", nodata=0,
                       crs="EPSG:32633", transform=rasterio.transform.from_origin(500_000, 5_100_000, 10, 10),
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate") as ds:
        ds.write(data, 1)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(520_000, 5_080_000)
    far, near = TMS.tile(lon, lat, 8), TMS.tile(lon, lat, 12)
    t0 = time.monotonic()
    with pytest.raises(TileTooCostly, match=f"the limit is {MAX_SOURCE_PIXELS / 1e6:.0f} M.*zoom in"):
        read_tile(LAYERS["mask"], path, [], TMS, far.x, far.y, far.z, 256)
    assert time.monotonic() - t0 < 0.5
    image = read_tile(LAYERS["mask"], path, [], TMS, near.x, near.y, near.z, 256)
    assert set(np.unique(image.array.data)) <= set(range(6))


def test_open_datasets_are_reused_and_a_rewritten_file_is_read_anew(run_doc: dict[str, Any],
                                                                    masked_runs_root: Path, tmp_path: Path):
    """Tiles reuse open datasets (GDAL's block cache lives in them), several threads at once get identical
    tiles, and a file replaced under the same name (a resumed run) is never served from the old one."""
    from concurrent.futures import ThreadPoolExecutor

    from tiles_server.layers import LAYERS
    from tiles_server.rendering import POOL, read_tile

    acq = run_doc["acquisitions"][0]["id"]
    src = masked_runs_root / "wide" / acq / "mask.tif"
    path = tmp_path / "mask.tif"
    shutil.copy(src, path)
    with rasterio.open(path) as ds:
        w, s, e, n = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    tile = TMS.tile((w + e) / 2, (s + n) / 2, 12)

    def one(_: int) -> np.ndarray:
        return read_tile(LAYERS["mask"], path, [], TMS, tile.x, tile.y, tile.z, 256).array.data.copy()

    opened = POOL.opened
    with ThreadPoolExecutor(8) as pool:
        tiles = list(pool.map(one, range(40)))
    assert all(np.array_equal(t, tiles[0]) for t in tiles)
    assert POOL.opened - opened <= POOL.per_key  # 40 tiles, at most one dataset per concurrent reader
    # replace the file the way a run does (a new file renamed over the old one): the new pixels are served
    with rasterio.open(src) as ds:
        profile, data = ds.profile, ds.read(1)
    part = tmp_path / "mask.tif.part"
    with rasterio.open(part, "w", **profile) as ds:
        ds.write(np.where(data > 0, 3, 0).astype(np.uint8), 1)
    part.replace(path)
    assert set(np.unique(one(0))) <= {0, 3, 254} and 3 in one(0)


def test_tiles_whose_client_left_are_not_drawn(masked_runs_root: Path, run_doc: dict[str, Any]):
    """Requests wait for a drawing slot; one whose client has gone when its turn comes is dropped, not drawn
    (Leaflet cancels the tiles that a pan or a zoom left behind). ``/healthz`` counts both."""
    import socket

    acq = run_doc["acquisitions"][0]["id"]
    with TilesServer(masked_runs_root, "--tile-slots", "1") as srv:
        doc = requests.get(f"{srv.url}/runs/wide/{acq}/rgb/tilejson.json", timeout=30).json()
        z = doc["maxzoom"] + 2
        w, s_, e, n = doc["bounds"]
        tiles = list(TMS.tiles(w, s_, e, n, zooms=[z]))[:30]
        sockets = []
        for tile in tiles:
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.sendall(f"GET /runs/wide/{acq}/rgb/tiles/{z}/{tile.x}/{tile.y}.png HTTP/1.1\r\n"
                         f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            sockets.append(sock)
        for sock in sockets:  # every client gives up before its tile is drawn
            sock.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = requests.get(f"{srv.url}/healthz", timeout=10).json()["tiles"]
            if counts["drawn"] + counts["abandoned"] >= len(tiles):
                break
            time.sleep(0.1)
        assert counts["slots"] == 1 and counts["drawn"] + counts["abandoned"] >= len(tiles), counts
        assert counts["abandoned"] >= len(tiles) // 2, counts
        _png(requests.get(f"{srv.url}/runs/wide/{acq}/rgb/tiles/{z}/{tiles[0].x}/{tiles[0].y}.png", timeout=30))


@pytest.mark.parametrize("layer", ["rgb", "mask"])
def test_webp_tiles_are_the_png_tiles_losslessly(server: TilesServer, run_doc: dict[str, Any], layer: str):
    """``.webp`` tiles (what the app's maps ask for: faster to encode, smaller) hold the very pixels of the
    ``.png`` tiles; TileJSON gives the format asked for; other formats are a 400 naming the choices."""
    acq = run_doc["acquisitions"][0]["id"]
    tj = requests.get(f"{server.url}/runs/wide/{acq}/{layer}/tilejson.json?format=webp&opacity=0.6", timeout=30).json()
    assert tj["tiles"][0].endswith("/tiles/{z}/{x}/{y}.webp?opacity=0.6"), tj["tiles"]
    lon, lat = tj["center"][:2]
    tile = TMS.tile(lon, lat, tj["maxzoom"])
    png = _png(requests.get(_tile_url(server, acq, layer, tile) + "?opacity=0.6", timeout=30))
    resp = requests.get(_tile_url(server, acq, layer, tile).replace(".png", ".webp") + "?opacity=0.6", timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/webp"
    webp = np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGBA"))
    seen = png[..., 3] > 0  # colour under fully transparent pixels is not kept by WebP (nothing shows there)
    assert seen.any() and np.array_equal(webp[seen], png[seen]) and np.array_equal(webp[..., 3], png[..., 3])
    bad = requests.get(_tile_url(server, acq, layer, tile).replace(".png", ".gif"), timeout=30)
    assert bad.status_code == 400 and "png" in bad.json()["detail"] and "webp" in bad.json()["detail"], bad.text


def test_tilejson_urls_carry_the_prefix_a_proxy_stripped(server: TilesServer, run_doc: dict[str, Any]):
    """Behind a proxy that strips its path prefix and says so in ``X-Forwarded-Prefix``, TileJSON's tile URLs
    carry the prefix again; a header that is not a plain path is ignored."""
    acq = run_doc["acquisitions"][0]["id"]
    url = f"{server.url}/runs/wide/{acq}/mask/tilejson.json"
    tj = requests.get(url, headers={"X-Forwarded-Prefix": "/team/s2"}, timeout=30).json()
    assert tj["tiles"][0].startswith(f"{server.url}/team/s2/runs/wide/{acq}/mask/tiles/"), tj["tiles"]
    for hostile in ("//evil.example", "/a/../b", "/x?y=1", "javascript:alert(1)", "/a b", "/x\"<"):
        tj = requests.get(url, headers={"X-Forwarded-Prefix": hostile}, timeout=30).json()
        assert tj["tiles"][0].startswith(f"{server.url}/runs/wide/{acq}/mask/tiles/"), (hostile, tj["tiles"])


def test_colormap_images_have_a_size_limit(server: TilesServer):
    for query in ("?width=8000&height=8000", "?width=0", "?height=abc"):
        resp = requests.get(f"{server.url}/colorMaps/viridis{query}", timeout=30)
        assert resp.status_code == 400 and "from 1 to 2048" in resp.json()["detail"], resp.text
    assert requests.get(f"{server.url}/colorMaps/viridis?width=256&height=20", timeout=30).status_code == 200
