"""End to end in a real browser: Playwright drives Debian's Chromium through the app on loopback.

The test starts the tile server and the Streamlit app, serves Leaflet & co. from npm tarballs in
place of the CDNs, draws an AOI over the shared mapchete-eo scenes, searches, runs, waits for
the run to finish, compares masks (overlay tiles must be PNGs from the tile server, statistics
must show), downloads a GeoTIFF and opens it with rasterio. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import rasterio
import requests

from tests.conftest import MAPCHETE_CATALOG, ROOT, SHARED, needs_shared
from tests.servers import TilesServer, free_port

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "tests" / "artifacts"

pytestmark = [
    needs_shared,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def cdn():
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -r requirements.txt)")
    from tests.webassets import CdnStand, fetch_packages

    problem = fetch_packages()
    if problem:
        pytest.skip(problem)
    return CdnStand()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TilesServer, Path]]:
    root = tmp_path_factory.mktemp("e2e-runs")
    with TilesServer(root) as tiles:
        port = free_port()
        env = {**os.environ, "S2_RUNS_DIR": str(root), "S2_TILES_URL": tiles.url, "S2_CATALOG_ROOTS": str(SHARED)}
        log = open(root.parent / "streamlit.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if requests.get(f"{url}/_stcore/health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("streamlit did not start")
            yield url, tiles, root
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()


@pytest.fixture(scope="module")
def page(cdn: Any):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)

        def route(r: Any) -> None:
            host = r.request.url.split("/")[2]
            if host.startswith("127.0.0.1") or host.startswith("localhost"):
                r.continue_()
                return
            status, ctype, body = cdn.answer(r.request.url)
            r.fulfill(status=status, content_type=ctype, body=body, headers={"Access-Control-Allow-Origin": "*"})

        context.route("**/*", route)
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()


def _wait_idle(page: Any) -> None:
    """Wait until Streamlit has finished its rerun."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_draw_search_run_compare_export(page: Any, app_url: tuple[str, TilesServer, Path], cdn: Any):
    from playwright.sync_api import expect

    url, tiles, root = app_url
    tile_responses: list[tuple[str, int, str]] = []
    page.on("response", lambda r: tile_responses.append((r.url, r.status, r.headers.get("content-type", "")))
            if r.url.startswith(tiles.url) and "/tiles/" in r.url else None)

    # home
    page.goto(url)
    expect(page.get_by_text("Sentinel-2 analysis-ready rasters and masks")).to_be_visible()
    expect(page.get_by_text("Tile server up")).to_be_visible()
    _shot(page, "01-home")

    # run page: draw a rectangle over the 33TWL/33TWM boundary
    page.goto(f"{url}/Run")
    expect(page.get_by_text("Area of interest from")).to_be_visible()
    frame = page.frame_locator("iframe[title*='streamlit_folium']").first
    frame.locator(".leaflet-draw-draw-rectangle").click()
    box = frame.locator(".leaflet-container").bounding_box()
    if box is None:  # the iframe's own box gives the page coordinates
        box = page.locator("iframe[title*='streamlit_folium']").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 45, cy - 45)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + 45, cy + 45, steps=5)
    page.mouse.up()
    expect(page.get_by_text(re.compile(r"AOI: [\d,.]+ km²"))).to_be_visible(timeout=60_000)
    _wait_idle(page)

    _set_date(page, "Start date", "2023-08-10")
    _set_date(page, "End date", "2023-08-20")
    page.get_by_text("Bands, grid and selection").click()
    _choose(page, "bands", "10 m bands: B02 B03 B04 B08")
    res = page.get_by_label("resolution (m)")
    res.fill("120")
    res.press("Enter")
    _wait_idle(page)
    _choose(page, "Catalog", "Local catalog")
    path_box = page.get_by_label(re.compile("Catalog path"))
    path_box.fill(str(MAPCHETE_CATALOG))
    path_box.press("Enter")
    _wait_idle(page)
    _shot(page, "02-run-filled")

    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text(re.compile(r"5 acquisition\(s\) will be processed"))).to_be_visible(timeout=120_000)
    _shot(page, "03-search")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_text(re.compile("Done: outputs in"))).to_be_visible(timeout=300_000)
    _shot(page, "04-run-done")
    run_dirs = [p for p in root.iterdir() if (p / "manifest.json").exists()]
    assert len(run_dirs) == 1

    # compare: overlay tiles come from the tile server as PNGs, statistics show
    page.goto(f"{url}/Compare")
    expect(page.get_by_text("Overall agreement")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Cloud IoU")).to_be_visible()
    page.wait_for_timeout(4000)
    pngs = [u for u, status, ctype in tile_responses if status == 200 and ctype == "image/png"]
    layers = {re.search(r"/(rgb|mask|product_mask|cloud_prob|shadow_prob|scl)/tiles/", u).group(1) for u in pngs}
    assert {"rgb", "mask", "product_mask"} <= layers, tile_responses[:10]
    _shot(page, "05-compare")

    # export: download one mask GeoTIFF and open it
    page.goto(f"{url}/Export")
    expect(page.get_by_text("Whole run")).to_be_visible()
    page.get_by_text(re.compile(r"^\d{8}_S2._R\d{3} —")).first.click()
    with page.expect_download() as dl:
        page.get_by_role("button", name=re.compile(r"^mask\.tif")).first.click()
    target = ARTIFACTS / "downloaded-mask.tif"
    dl.value.save_as(target)
    with rasterio.open(target) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.crs.to_epsg() == 32633
        assert set(int(v) for v in (ds.read(1)[::10, ::10]).ravel()) <= {0, 1, 2, 3, 4, 5}
    _shot(page, "06-export")
    assert cdn.served, "no CDN request was answered from the npm packages"


def _set_date(page: Any, label: str, iso: str) -> None:
    """Type a date into Streamlit's segmented date field (year, month, day spinbuttons)."""
    year, month, day = iso.split("-")
    for part, value in (("year", year), ("month", month), ("day", day)):
        seg = page.get_by_role("spinbutton", name=f"{part}, {label}")
        seg.click()
        page.keyboard.type(value)
    page.keyboard.press("Tab")
    _wait_idle(page)


def _choose(page: Any, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label``.

    A rerun that lands between opening the list and clicking closes the list again: open it
    again (up to three times) rather than wait on a list that is gone.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.get_by_label(label, exact=True)
    box.wait_for(state="visible", timeout=60_000)
    for attempt in range(3):
        _wait_idle(page)
        box.click()
        try:
            page.get_by_role("option", name=option).click(timeout=15_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            if attempt == 2:
                raise
    _wait_idle(page)
