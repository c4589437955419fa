"""Shared fixtures: real Sentinel-2 data from ../shared/data, COG copies, loopback servers."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import rasterio
from rasterio.shutil import copy as rio_copy

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("S2_SHARED_DATA", ROOT.parent / "shared" / "data"))
MAPCHETE = SHARED / "l2a" / "mapchete-eo-33TWL-33TWM"
MAPCHETE_CATALOG = MAPCHETE / "catalog.json"
RKH = SHARED / "l2a" / "rio-tiler-pds-29RKH" / "S2A_29RKH_20200219_0_L2A"
PC_ITEMS = SHARED / "stac" / "planetarycomputer__sentinel-2-l2a__items.json"
LOCAL_BANDS = ("B02", "B03", "B04", "B08")

needs_shared = pytest.mark.skipif(
    not MAPCHETE_CATALOG.exists(),
    reason=f"real Sentinel-2 test data not found at {SHARED} (clone the project next to shared/data "
    "or set S2_SHARED_DATA)",
)

#: AOI straddling tiles 33TWL (south) and 33TWM (north): neither covers it alone.
STRADDLE_WKT = "POLYGON((15.9 45.9, 16.1 45.9, 16.1 46.1, 15.9 46.1, 15.9 45.9))"
#: Both tiles, about 62 x 67 km: large enough for cloud statistics, 120 m pixels (the test data's own).
WIDE_AOI = "POLYGON((15.6 45.75,16.4 45.75,16.4 46.35,15.6 46.35,15.6 45.75))"
#: AOI inside 33TWM only.
INSIDE_TWM_WKT = "POLYGON((15.9 46.3, 16.0 46.3, 16.0 46.4, 15.9 46.4, 15.9 46.3))"


def mapchete_items() -> list[tuple[dict[str, Any], Path]]:
    """(raw item dict, item JSON path) of the 10 mapchete-eo items."""
    out = []
    for p in sorted((MAPCHETE / "sentinel-2-l2a").glob("*/*.json")):
        out.append((json.loads(p.read_text()), p))
    return out


@pytest.fixture(scope="session")
def cog_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mapchete-eo band files rewritten as real COGs (same pixels), one folder per item."""
    if not MAPCHETE_CATALOG.exists():
        pytest.skip(f"real Sentinel-2 test data not found at {SHARED}")
    return write_cogs(tmp_path_factory.mktemp("cogs"))


def write_cogs(root: Path) -> Path:
    """The mapchete-eo band files (4 bands + SCL) rewritten as COGs under ``root/<item id>/``."""
    for item, path in mapchete_items():
        dst = root / item["id"]
        dst.mkdir()
        for name in (*LOCAL_BANDS, "SCL"):
            with rasterio.open(path.parent / f"{name}.tif") as src:
                rio_copy(src, str(dst / f"{name}.tif"), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="256",
                         OVERVIEWS="NONE")
    return root


def with_absolute_hrefs(item: dict[str, Any], path: Path) -> dict[str, Any]:
    """A copy of a mapchete-eo item (read from ``path``) with its relative hrefs made absolute and no links,
    to be written into another catalog folder."""
    it = copy.deepcopy(item)
    it["links"] = []
    for asset in it["assets"].values():
        href = asset.get("href", "")
        if href and "://" not in href and not href.startswith("/"):
            asset["href"] = str((path.parent / href).resolve())
    return it


def items_served_from(base_url: str, prefix: str = "files", query: str = "") -> list[dict[str, Any]]:
    """The mapchete-eo items with local band hrefs replaced by ``base_url/prefix/<item>/<band>.tif``."""
    keys = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}
    out = []
    for item, _ in mapchete_items():
        it = copy.deepcopy(item)
        it["links"] = [ln for ln in it.get("links", []) if ln.get("rel") not in ("root", "parent", "collection", "self")]
        it["collection"] = "sentinel-2-l2a"
        for key, band in keys.items():
            it["assets"][key]["href"] = f"{base_url}/{prefix}/{it['id']}/{band}.tif{query}"
        out.append(it)
    return out


@pytest.fixture(scope="session")
def asset_server(cog_tree: Path) -> Iterator[Any]:
    """A Range-capable HTTP server over :func:`cog_tree` on loopback."""
    from tests.servers import AssetServer

    with AssetServer(cog_tree) as server:
        yield server


@pytest.fixture(scope="session")
def stac_api(asset_server: Any) -> Iterator[Any]:
    """stac-fastapi-pgstac over pgstac holding the mapchete-eo items, assets on :func:`asset_server`."""
    from tests.servers import PgStacServer, postgres_available

    why = postgres_available()
    if why:
        pytest.skip(why)
    collection = json.loads((MAPCHETE / "sentinel-2-l2a" / "collection.json").read_text())
    collection["links"] = []
    items = items_served_from(asset_server.url)
    with PgStacServer([collection], items) as server:
        yield server


@pytest.fixture(scope="session")
def masked_runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root holding run ``wide``: the 5 mapchete-eo dates over :data:`WIDE_AOI` with masks
    (binary mask too), as ``python -m s2core run`` writes it."""
    if not MAPCHETE_CATALOG.exists():
        pytest.skip(f"real Sentinel-2 test data not found at {SHARED}")
    from s2core import make_request, preprocess

    root = tmp_path_factory.mktemp("runs-root")
    req = make_request(aoi=WIDE_AOI, start="2023-08-10", end="2023-08-20", catalog=str(MAPCHETE_CATALOG),
                       bands="B02,B03,B04,B08", resolution=120, out_dir=root, run_id="wide", max_aoi_km2=10_000,
                       min_tile_cover=0.5, masks={"binary_mask": True})
    manifest = preprocess(req)
    assert manifest.status == "completed", manifest.error
    return root


# --- markers: a quick loop is `python -m pytest -m "not slow"` (README); the plain command runs everything ---
#: test files whose tests need a browser, a PostgreSQL server, a Dask cluster, or take seconds each
_FILE_MARKERS = {
    "test_e2e_browser.py": ("e2e", "slow"),
    "test_dask_cluster.py": ("dask", "slow"),
    "test_strips.py": ("slow",),
    "test_masks_pipeline.py": ("slow",),
    "test_app_pages.py": ("slow",),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by what they need: ``e2e`` (Chromium), ``postgres`` (the real STAC API), ``dask`` (a
    LocalCluster), ``slow`` (all of those, and the whole-product runs)."""
    for item in items:
        for name in _FILE_MARKERS.get(Path(str(item.fspath)).name, ()):
            item.add_marker(getattr(pytest.mark, name))
        if "stac_api" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.slow)


def one_line_error(res: Any, needle: str, prefix: str = "error: ") -> str:
    """Assert that a CLI run failed with exit 2 and one stderr line starting with ``prefix`` and holding
    ``needle`` (no traceback); returns that line."""
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix) and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]
