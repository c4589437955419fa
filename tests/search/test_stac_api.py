"""The STAC-API code path (the Planetary Computer one, signing hook included) against a real
stac-fastapi-pgstac server on loopback, with COG assets on a Range-capable HTTP server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from s2core import make_request, preprocess
from s2core.search.catalog import StacApiCatalog, open_catalog
from s2core.errors import AssetTimeout, CatalogResponseError, CatalogUnreachable, NoItemsFound
from tests.conftest import INSIDE_TWM_WKT, STRADDLE_WKT, needs_shared

pytestmark = needs_shared


def _req(tmp_path: Path, catalog: str, aoi: str = STRADDLE_WKT, **kw):
    args = dict(aoi=aoi, start="2023-08-10", end="2023-08-15", catalog=catalog, bands="B02,B03,B04,B08",
                out_dir=tmp_path)
    args.update(kw)
    return make_request(**args)


def test_search_and_run_through_the_stac_api(tmp_path, stac_api, asset_server):
    asset_server.counter.reset()
    manifest = preprocess(_req(tmp_path, stac_api.url))
    assert manifest.status == "completed" and manifest.items_found == 6
    assert [a.id for a in manifest.acquisitions] == ["20230810_S2B_R079", "20230813_S2B_R122", "20230815_S2A_R079"]
    assert all(sorted(a.tiles) == ["33TWL", "33TWM"] for a in manifest.acquisitions)
    # reads were HTTP range requests and the manifest accounts for the bytes
    assert asset_server.counter.ranged > 0
    assert manifest.bytes_read is not None and manifest.bytes_read > 0
    assert 0.2 * asset_server.counter.bytes_sent <= manifest.bytes_read <= asset_server.counter.bytes_sent
    # same pixels as the offline (static catalog) run
    from tests.conftest import MAPCHETE_CATALOG

    offline = preprocess(_req(tmp_path / "offline", str(MAPCHETE_CATALOG)))
    for a, b in zip(manifest.acquisitions, offline.acquisitions):
        with rasterio.open(tmp_path / manifest.run_id / a.outputs["raster"]) as x, \
                rasterio.open(tmp_path / "offline" / offline.run_id / b.outputs["raster"]) as y:
            assert np.array_equal(x.read(), y.read())


def test_small_aoi_reads_a_fraction_of_the_files(tmp_path, stac_api, asset_server, cog_tree):
    asset_server.counter.reset()
    aoi = "POLYGON((16.0 46.4, 16.03 46.4, 16.03 46.42, 16.0 46.42, 16.0 46.4))"  # ~2.3 x 2.2 km
    manifest = preprocess(_req(tmp_path, stac_api.url, aoi=aoi, start="2023-08-13", end="2023-08-13"))
    files = sum(p.stat().st_size for p in (cog_tree / "S2B_33TWM_20230813_0_L2A").glob("*.tif"))
    assert 0 < asset_server.counter.bytes_sent < 0.25 * files
    assert manifest.acquisitions[0].status == "completed"


def test_max_cloud_cover_query(tmp_path, stac_api):
    aoi_scenes = StacApiCatalog(stac_api.url).search(
        __import__("s2core").parse_aoi(STRADDLE_WKT), *map(__import__("datetime").date.fromisoformat,
                                                          ("2023-08-01", "2023-08-31")), max_cloud_cover=5)
    assert aoi_scenes and all(s.cloud_cover <= 5 for s in aoi_scenes)
    assert {s.datetime.date().isoformat() for s in aoi_scenes} <= {"2023-08-13", "2023-08-15", "2023-08-18", "2023-08-20"}


class TokenSigner:
    """A signing hook like Planetary Computer's: fetches the server's current token, caches it."""

    def __init__(self, server) -> None:
        self.server = server
        self.cached = None
        self.fetches = 0

    def __call__(self, href: str, force: bool = False) -> str:
        if self.cached is None or force:
            self.cached = self.server.token
            self.fetches += 1
        return f"{href}?token={self.cached}"


def test_signing_hook_and_resigning_after_expiry(tmp_path, stac_api, asset_server):
    catalog = StacApiCatalog(stac_api.url)
    signer = TokenSigner(asset_server)
    catalog.sign = signer
    # point the hrefs at the token-protected mount: search results come from the API, then rewritten
    original = catalog.search

    def search(*a, **k):
        scenes = original(*a, **k)
        from dataclasses import replace

        return [replace(s, hrefs={b: h.replace("/files/", "/signed/") for b, h in s.hrefs.items()}) for s in scenes]

    catalog.search = search  # type: ignore[method-assign]
    signer.cached = "expired-token"  # as if the token had expired since it was cached
    forbidden0 = asset_server.forbidden
    manifest = preprocess(_req(tmp_path, stac_api.url, aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-13"),
                          catalog=catalog)
    assert manifest.status == "completed"
    assert asset_server.forbidden > forbidden0  # the stale token was refused ...
    assert signer.fetches >= 1  # ... and a fresh one fetched
    assert "token" not in json.dumps(manifest.model_dump())


def test_planetary_computer_signer_uses_the_sas_endpoint(asset_server, monkeypatch):
    """The real ``planetary-computer`` signer against a local SAS token endpoint."""
    import planetary_computer
    from planetary_computer import sas

    from s2core.search.catalog import PlanetaryComputerSigner

    calls = []

    # a tiny token endpoint served by a second loopback server
    import datetime as dt

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def token(request):
        calls.append(request.headers.get("ocp-apim-subscription-key"))
        exp = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
        return JSONResponse({"msft:expiry": exp, "token": f"st=x&se=y&sp=rl&sig=s{len(calls)}"})

    import threading

    import uvicorn

    from tests.servers import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/sas/{a}/{c}", token)]), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.02)
    try:
        monkeypatch.setattr(planetary_computer.settings.Settings.get(), "sas_url", f"http://127.0.0.1:{port}/sas")
        sas.TOKEN_CACHE.clear()
        signer = PlanetaryComputerSigner(pc_key="my-secret-key-123")
        href = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/WL/B04.tif"
        first = signer(href)
        again = signer(href)
        forced = signer(href, force=True)
        assert first.endswith("sig=s1") and again == first and forced.endswith("sig=s2")
        assert calls == ["my-secret-key-123", "my-secret-key-123"]
        assert signer("http://127.0.0.1/local.tif") == "http://127.0.0.1/local.tif"  # not Azure: unchanged
    finally:
        server.should_exit = True
        th.join(5)
        planetary_computer.settings.Settings.get().subscription_key = None
        sas.TOKEN_CACHE.clear()


def test_stalled_server_times_out_within_dl_timeout(tmp_path, stac_api, asset_server):
    catalog = StacApiCatalog(stac_api.url)
    original = catalog.search

    def search(*a, **k):
        from dataclasses import replace

        return [replace(s, hrefs={b: h.replace("/files/", "/stall/") for b, h in s.hrefs.items()})
                for s in original(*a, **k)]

    catalog.search = search  # type: ignore[method-assign]
    req = _req(tmp_path, stac_api.url, aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-13", dl_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(AssetTimeout, match="dl_timeout=2 s"):
        preprocess(req, catalog=catalog)
    elapsed = time.monotonic() - t0
    assert elapsed < 2 + 3.0, elapsed
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert manifest["status"] == "failed" and "dl_timeout" in manifest["acquisitions"][0]["error"]


def test_unreachable_and_garbage_catalogs(tmp_path, asset_server):
    from tests.servers import free_port

    with pytest.raises(CatalogUnreachable, match="Cannot reach the STAC API"):
        preprocess(_req(tmp_path, f"http://127.0.0.1:{free_port()}/stac"))
    # a server that answers, but not with STAC (a GeoTIFF) / a 404 page
    with pytest.raises(CatalogResponseError):
        preprocess(_req(tmp_path, f"{asset_server.url}/files/S2B_33TWM_20230813_0_L2A/B04.tif"))
    with pytest.raises((CatalogResponseError, CatalogUnreachable)):
        preprocess(_req(tmp_path, f"{asset_server.url}/nothing-here"))
    with pytest.raises(CatalogUnreachable, match="neither 'pc'"):
        open_catalog("/no/such/catalog.json")
    assert not any(tmp_path.iterdir())


def test_empty_search_and_unknown_collection(tmp_path, stac_api):
    with pytest.raises(NoItemsFound, match="widen the date range"):
        preprocess(_req(tmp_path, stac_api.url, start="2021-01-01", end="2021-01-31"))
    with pytest.raises(NoItemsFound, match="sentinel-2-l1c"):
        preprocess(_req(tmp_path, stac_api.url, collection="sentinel-2-l1c"))
