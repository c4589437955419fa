"""Benchmark: bytes read and wall time of s2core's windowed reads vs downloading whole tiles.

For a 5 × 5 km AOI over the five mapchete-eo dates (tiles 33TWL/33TWM) served as COGs by a
Range-capable HTTP server on loopback, compare:

* **s2core**: ``preprocess`` through a local STAC catalog whose hrefs are HTTP URLs
  (GDAL range reads of only the blocks that intersect the AOI);
* **whole tiles** (what the reference workflow does): download every band file of every
  selected item completely, then crop.

Run: ``python benchmarks/bench_windowed_reads.py`` (needs ../shared/data).

Note: the shared files are whole tiles downsampled to 120 m (915² px), so absolute bytes are
small; at native 10 m a 5 × 5 km AOI is 0.2 % of a 10980² tile and the ratio grows accordingly.
"""

from __future__ import annotations

import json
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
