"""Benchmark: bytes read and wall time of s2core's windowed reads vs downloading whole tiles.

For a 5 × 5 km AOI over the five mapchete-eo dates (tiles 33TWL/33TWM) served as COGs by a
Range-capable HTTP server on loopback, compare:

* **s2core**: ``preprocess`` through a local STAC catalog whose hrefs are HTTP URLs
  (GDAL range reads of only the blocks that intersect the AOI);
* **whole tiles** (what the reference workflow does): download every band file of every
  selected item completely, then crop.

Then, where it matters, on **full-size** COGs: one date of tile 33TWM rebuilt at native size
(B02 B03 B04 B08 10980² at 10 m, SCL 5490² at 20 m; real pixels upsampled with a little noise so
that DEFLATE works on image-like data) as Earth Search and Planetary Computer serve them (1024²
internal tiles, DEFLATE, overviews), for AOIs of 1 km², 5 × 5 km and 20 × 20 km in the tile: bytes and
requests of s2core against downloading the whole files and against the **physical limit** (the
file headers plus every full-resolution internal tile that the AOI's window touches, each band
on its own pixel grid; sizes from GDAL's ``BLOCK_SIZE_x_y``). Target: within 1.1× of the limit.

Run: ``python benchmarks/bench_windowed_reads.py [--no-full-size]`` (needs ../shared/data; the
full-size part writes ~1 GB of COGs into a temporary folder and takes a few minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import LOCAL_BANDS, MAPCHETE_CATALOG, items_served_from, mapchete_items  # noqa: E402
from tests.servers import AssetServer  # noqa: E402


def main() -> int:
    if not MAPCHETE_CATALOG.exists():
        print(f"skip: {MAPCHETE_CATALOG} not found (needs ../shared/data)")
        return 0
    import rasterio
    from pyproj import Transformer
    from rasterio.shutil import copy as rio_copy

    from s2core import make_request, preprocess

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    cogs = work / "cogs"
    for item, path in mapchete_items():
        (cogs / item["id"]).mkdir(parents=True)
        for name in (*LOCAL_BANDS, "SCL"):
            with rasterio.open(path.parent / f"{name}.tif") as src:
                rio_copy(src, str(cogs / item["id"] / f"{name}.tif"), driver="COG", COMPRESS="DEFLATE",
                         BLOCKSIZE="256", OVERVIEWS="NONE")
    # 5 x 5 km AOI straddling the 33TWL/33TWM boundary (northing 5 100 000 m)
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    x0, y0 = 575000, 5097500
    corners = [to_ll.transform(x, y) for x, y in ((x0, y0), (x0 + 5000, y0), (x0 + 5000, y0 + 5000), (x0, y0 + 5000))]
    aoi = "POLYGON((" + ", ".join(f"{lon} {lat}" for lon, lat in corners + corners[:1]) + "))"

    with AssetServer(cogs) as server:
        catalog = work / "items.json"
        catalog.write_text(json.dumps({"type": "FeatureCollection", "features": items_served_from(server.url)}))
        req = make_request(aoi=aoi, start="2023-08-10", end="2023-08-20", catalog=str(catalog),
                           bands=",".join(LOCAL_BANDS), out_dir=work / "runs")
        server.counter.reset()
        t0 = time.perf_counter()
        manifest = preprocess(req)
        ours_s = time.perf_counter() - t0
        ours_bytes, ours_requests = server.counter.bytes_sent, server.counter.requests

        # the reference: whole files of every selected item, then crop
        used = {i for a in manifest.acquisitions for i in a.items}
        server.counter.reset()
        t0 = time.perf_counter()
        whole = 0
        with requests.Session() as http:
            for item_id in sorted(used):
                for name in (*LOCAL_BANDS, "SCL"):
                    r = http.get(f"{server.url}/files/{item_id}/{name}.tif", timeout=60)
                    r.raise_for_status()
                    dst = work / "whole" / item_id / f"{name}.tif"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(r.content)
                    whole += len(r.content)
        whole_s = time.perf_counter() - t0

    n = len(manifest.acquisitions)
    print(f"AOI 5 x 5 km, {n} dates, {len(used)} items, bands {','.join(LOCAL_BANDS)}+SCL (120 m test tiles)")
    print(f"{'':22}{'bytes read':>14}{'requests':>10}{'wall s':>9}")
    print(f"{'s2core windowed':22}{ours_bytes:>14,}{ours_requests:>10}{ours_s:>9.2f}   (incl. stacking + COG writing)")
    print(f"{'whole-tile download':22}{whole:>14,}{len(used) * 5:>10}{whole_s:>9.2f}   (download only)")
    print(f"ratio whole/windowed bytes: {whole / max(ours_bytes, 1):.1f}x")
    aoi_frac = 25e6 / (10980 * 10 * 10980 * 10)
    print(f"at native 10 m the AOI is {aoi_frac:.2%} of a 10980² tile: a whole-tile reader moves "
          f"~{1 / aoi_frac:.0f}x the AOI's pixels")
    print(f"manifest bytes_read (GDAL's own count): {manifest.bytes_read}")
    if "--no-full-size" not in sys.argv:
        full_size(work)
    return 0


FULL_ITEM = "S2A_33TWM_20230815_0_L2A"
FULL_BANDS = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "SCL": 20}


def _build_full_size(src_dir: Path, dest: Path) -> None:
    """The item's band files at native size as COGs with 1024² internal tiles (real pixels, upsampled)."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy

    from s2core.read.gdal_mem import open_array

    rng = np.random.default_rng(0)
    dest.mkdir(parents=True, exist_ok=True)
    for band, res in FULL_BANDS.items():
        size = 109800 // res
        with rasterio.open(src_dir / f"{band}.tif") as src:
            data = src.read(1, out_shape=(size, size),
                            resampling=Resampling.nearest if band == "SCL" else Resampling.bilinear)
            t, crs = src.transform, src.crs
        if band != "SCL":
            data = np.where(data > 0, data + rng.integers(0, 16, data.shape, dtype=np.uint16), 0).astype(np.uint16)
        with open_array(data[None], "r+") as ds:
            ds.crs, ds.transform, ds.nodata = crs, Affine(res, 0, t.c, 0, -res, t.f), 0
            rio_copy(ds, str(dest / f"{band}.tif"), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="1024",
                     OVERVIEW_RESAMPLING="NEAREST" if band == "SCL" else "AVERAGE", NUM_THREADS="ALL_CPUS")


def _physical_limit(path: Path, bounds: tuple[float, float, float, float]) -> tuple[int, int]:
    """(bytes, tiles): the header plus every full-resolution internal tile the AOI's window touches."""
    import math

    import rasterio
    from rasterio.windows import from_bounds

    with rasterio.open(path) as ds:
        win = from_bounds(*bounds, transform=ds.transform)
        bh, bw = ds.block_shapes[0]
        c0, r0 = max(0, math.floor(win.col_off)), max(0, math.floor(win.row_off))
        c1 = min(ds.width, math.ceil(win.col_off + win.width))
        r1 = min(ds.height, math.ceil(win.row_off + win.height))
        tiles = [(x, y) for y in range(r0 // bh, (r1 - 1) // bh + 1) for x in range(c0 // bw, (c1 - 1) // bw + 1)]
        data = sum(int(ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1)) for x, y in tiles)
        first = min(int(ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1))
                    for x in range(math.ceil(ds.width / bw)) for y in range(math.ceil(ds.height / bh)))
        for k in range(len(ds.overviews(1))):  # the overviews' data comes before the full resolution in a COG
            with rasterio.open(path, OVERVIEW_LEVEL=k) as ov:
                first = min(first, int(ov.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1)))
    return first + data, len(tiles)


FULL_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from s2core import make_request, preprocess
req = make_request(aoi=sys.argv[2], start="2023-08-15", end="2023-08-15", catalog=sys.argv[3], bands=sys.argv[5],
                   out_dir=sys.argv[4], crs="EPSG:32633")
manifest = preprocess(req)
assert manifest.status == "completed", manifest.status
print(json.dumps(manifest.grid))
"""


def full_size(work: Path) -> None:
    """Windowed reads on full-size COGs for AOIs of 1, 25 and 400 km² against the physical limit."""
    from pyproj import Transformer

    src_dir = next(p.parent for item, p in mapchete_items() if item["id"] == FULL_ITEM)
    root = work / "full"
    t0 = time.perf_counter()
    _build_full_size(src_dir, root / FULL_ITEM)
    files = {b: root / FULL_ITEM / f"{b}.tif" for b in FULL_BANDS}
    whole = sum(p.stat().st_size for p in files.values())
    print(f"\nfull-size COGs of {FULL_ITEM} (4 bands 10980² + SCL 5490², 1024² tiles, DEFLATE, overviews): "
          f"{whole / 1e6:.0f} MB, built in {time.perf_counter() - t0:.0f} s")
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    cx, cy = 554880 + 1234, 5145120 - 777  # inside the tile, off its internal-tile grid
    # each AOI in its own part of the tile: no internal tile is shared between them
    centres = {1000: (cx - 30000, cy + 30000), 5000: (cx + 30000, cy + 30000), 20000: (cx, cy - 20000)}
    print(f"{'AOI':>10}{'ours MB':>10}{'requests':>10}{'limit MB':>10}{'tiles':>7}{'ours/limit':>12}"
          f"{'whole MB':>10}{'whole/ours':>12}{'wall s':>8}")
    with AssetServer(root) as server:
        features = [f for f in items_served_from(server.url) if f["id"] == FULL_ITEM]
        catalog = work / "full_items.json"
        catalog.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        for side in (1000, 5000, 20000):
            x0, y0 = centres[side][0] - side / 2, centres[side][1] - side / 2
            corners = [to_ll.transform(x, y) for x, y in ((x0, y0), (x0 + side, y0), (x0 + side, y0 + side),
                                                           (x0, y0 + side))]
            aoi = "POLYGON((" + ", ".join(f"{lon} {lat}" for lon, lat in corners + corners[:1]) + "))"
            server.counter.reset()
            t = time.perf_counter()
            # a fresh process per AOI: GDAL's own block cache would otherwise serve one AOI from another's reads
            done = subprocess.run([sys.executable, "-c", FULL_CHILD, str(ROOT), aoi, str(catalog),
                                   str(work / "runs_full"), ",".join(LOCAL_BANDS)], capture_output=True, text=True)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                print(done.stderr[-2000:])
                return
            grid = json.loads(done.stdout.strip().splitlines()[-1])
            ours, requests_n = server.counter.bytes_sent, server.counter.requests
            bounds = tuple(grid["bounds"])  # the output grid: what a reader must cover
            limit, tiles = map(sum, zip(*(_physical_limit(p, bounds) for p in files.values())))
            label = f"{side / 1000:g}x{side / 1000:g} km"
            print(f"{label:>10}{ours / 1e6:>10.2f}{requests_n:>10}{limit / 1e6:>10.2f}{tiles:>7}"
                  f"{ours / limit:>11.2f}x{whole / 1e6:>10.0f}{whole / max(ours, 1):>11.0f}x{wall:>8.2f}")
    print("target: ours within 1.1x of the physical limit (the header and the internal tiles the AOI touches)")


if __name__ == "__main__":
    raise SystemExit(main())
