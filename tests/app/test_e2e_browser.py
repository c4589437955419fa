"""End to end in a real browser: Playwright drives Debian's Chromium through the app behind a real reverse
proxy (nginx) on another loopback host name, with a path prefix, and with every other request blocked.

The app runs as its one command (``streamlit run app.py``, ``server.baseUrlPath=s2``) on 127.0.0.1;
nginx serves it at ``http://127.0.0.2:<port>/s2/``. The browser may reach nothing but that origin: not the
app's own port, not a CDN, not the basemap (the maps must say it is unreachable and still show the run's
layers). It draws an AOI over the shared mapchete-eo scenes, searches, runs, compares masks (overlay tiles
arrive through the prefix, the view survives a date switch, the disagreement layer renders), downloads a
GeoTIFF and opens it with rasterio; a second browser context (another user) sees the running job without
its Cancel button. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import rasterio
import requests

from tests.conftest import MAPCHETE_CATALOG, ROOT, SHARED, needs_shared
from tests.servers import free_port

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ARTIFACTS = ROOT / "tests" / "artifacts"
PROXY_HOST = "127.0.0.2"
PREFIX = "/s2"

pytestmark = [
    needs_shared,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(not Path(NGINX).exists(), reason="no nginx for the reverse proxy (apt-get install nginx)"),
]

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen {host}:{port};
        location {prefix}/ {{
            proxy_pass http://127.0.0.1:{app_port}{upstream_path};
            {forwarded_prefix}
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def _wait_for(url: str, what: str, seconds: float = 180.0) -> None:
    """Wait until ``url`` answers 200 (a first start on a fresh install compiles and imports a lot)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if requests.get(url, timeout=5).ok:
                return
        except requests.RequestException:  # not listening yet, or busy starting
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {seconds:g} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("e2e-runs")
    tmp = tmp_path_factory.mktemp("nginx")
    app_port = free_port()
    log = open(root.parent / "streamlit.log", "w")
    app = _start_app(root, app_port, log, PREFIX)
    with _proxy(tmp, app_port, PREFIX) as url:
        try:
            _wait_for(f"http://127.0.0.1:{app_port}{PREFIX}/_stcore/health", "streamlit")
            _wait_for(f"{url}/_stcore/health", "nginx")
            yield url, root
        finally:
            app.terminate()
            app.wait(timeout=20)
            log.close()


def _start_app(root: Path, port: int, log: Any, base_path: str = "") -> subprocess.Popen:
    """The app's one command on 127.0.0.1:``port`` over the runs in ``root`` (local catalogs: the shared data)."""
    env = {**os.environ, "S2_RUNS_DIR": str(root), "S2_CATALOG_ROOTS": str(SHARED)}
    env.pop("S2_TILES_URL", None)
    base = ["--server.baseUrlPath", base_path.strip("/")] if base_path else []
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", *base, "--server.fileWatcherType", "none"], cwd=ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT)


def _tile_page(browser: Any, blocked: list[str]) -> tuple[Any, Any, list[tuple[str, int, str]]]:
    """A context reaching the proxy only (:func:`_context`), its page, and the tile responses it receives
    (url, status, content type)."""
    context = _context(browser, blocked)
    page = context.new_page()
    page.set_default_timeout(60_000)
    responses: list[tuple[str, int, str]] = []
    page.on("response", lambda r: responses.append((r.url, r.status, r.headers.get("content-type", "")))
            if "/tiles/runs/" in r.url else None)
    return context, page, responses


@contextlib.contextmanager
def _proxy(tmp: Path, app_port: int, prefix: str, strip: bool = False) -> Iterator[str]:
    """nginx on PROXY_HOST serving the app under ``prefix``: passed on as it is (the app's ``baseUrlPath``), or
    stripped and named in ``X-Forwarded-Prefix`` (``strip``). Yields the URL the browser opens."""
    proxy_port = free_port()
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(
        tmp=tmp, host=PROXY_HOST, port=proxy_port, prefix=prefix, app_port=app_port,
        upstream_path="/" if strip else "",
        forwarded_prefix=f"proxy_set_header X-Forwarded-Prefix {prefix};" if strip else ""))
    proxy = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    try:
        yield f"http://{PROXY_HOST}:{proxy_port}{prefix}"
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -r requirements.txt)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _context(browser: Any, blocked: list[str]) -> Any:
    """A browser context that reaches the proxy's origin only; everything else is recorded and refused."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)

    def route(r: Any) -> None:
        if r.request.url.split("/")[2].split(":")[0] == PROXY_HOST:
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    return context


def _wait_idle(page: Any) -> None:
    """Wait until Streamlit has finished its rerun."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _map_zoom(page: Any) -> Optional[int]:
    """The zoom of the page's Leaflet map (streamlit-folium keeps it as ``window.map``), None if none yet."""
    for frame in page.frames:
        if "streamlit_folium" in (frame.url or ""):
            try:
                return frame.evaluate("window.map ? window.map.getZoom() : null")
            except Exception:  # noqa: BLE001 - a frame being replaced
                return None
    return None


def _poll(page: Any, check: Any, seconds: float = 15.0) -> bool:
    """True once ``check()`` is true, polling every 250 ms for up to ``seconds`` (the page's own wait, so
    that Playwright keeps delivering events meanwhile)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        page.wait_for_timeout(250)
    return False


def _zooms(responses: list[tuple[str, int, str]], layer: str, since: int = 0) -> set[int]:
    """The zoom levels of the ``layer`` tiles fetched after response ``since``."""
    return {int(m.group(1)) for u, status, _ in responses[since:]
            if status == 200 and (m := re.search(rf"/{layer}/tiles/(\d+)/", u))}


def test_draw_search_run_compare_export(browser: Any, app_url: tuple[str, Path]):
    from playwright.sync_api import expect

    url, root = app_url
    blocked: list[str] = []
    context, page, responses = _tile_page(browser, blocked)

    # home: the navigation names the pages
    page.goto(f"{url}/")
    expect(page.get_by_text("Sentinel-2 analysis-ready rasters and masks")).to_be_visible()
    expect(page.get_by_test_id("stSidebarNav").get_by_text("Home")).to_be_visible()
    _shot(page, "01-home")

    # run page: the map draws without internet and says the basemap is unreachable
    page.goto(f"{url}/Run")
    expect(page.get_by_text("Area of interest from")).to_be_visible()
    frame = page.frame_locator("iframe[title*='streamlit_folium']").first
    expect(frame.get_by_test_id("basemap-unreachable")).to_be_visible(timeout=60_000)
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
    expect(page.get_by_text(re.compile(r"Run \S+ — "))).to_be_visible(timeout=60_000)

    # another user, meanwhile: sees that a run is going on, and no Cancel button
    other_blocked: list[str] = []
    other = _context(browser, other_blocked)
    b_page = other.new_page()
    b_page.goto(f"{url}/Run")
    expect(b_page.get_by_text("Area of interest from")).to_be_visible(timeout=60_000)
    _wait_idle(b_page)
    assert b_page.get_by_role("button", name="Cancel").count() == 0
    other.close()

    expect(page.get_by_text(re.compile("Done: outputs in"))).to_be_visible(timeout=300_000)
    _shot(page, "04-run-done")
    run_dirs = [p for p in root.iterdir() if (p / "manifest.json").exists()]
    assert len(run_dirs) == 1

    # compare: overlay tiles (lossless WebP) come through the proxy's prefix, statistics show
    page.goto(f"{url}/Compare")
    expect(page.get_by_text("Overall agreement")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Cloud IoU")).to_be_visible()
    page.wait_for_timeout(4000)
    tiles = [u for u, status, ctype in responses if status == 200 and ctype == "image/webp"]
    assert tiles and all(u.startswith(f"{url}/tiles/runs/") for u in tiles), tiles[:5]
    layers = {m.group(1) for u in tiles if (m := re.search(r"/(rgb|mask|product_mask)/tiles/", u))}
    assert {"rgb", "mask", "product_mask"} <= layers, responses[:10]
    _shot(page, "05-compare")

    # zoom out, switch the date: the new map keeps the zoom the user chose
    _wait_idle(page)
    page.wait_for_timeout(2000)
    start_zoom = _map_zoom(page)
    for _ in range(3):  # a click that lands during a rerun's redraw is lost: click again
        page.frame_locator("iframe[title*='streamlit_folium']").first.locator(".leaflet-control-zoom-out").click()
        if _poll(page, lambda: _map_zoom(page) == start_zoom - 1):
            break
    page.wait_for_timeout(2000)
    _wait_idle(page)
    mark = len(responses)
    acquisition = page.get_by_label("Acquisition", exact=True)
    acquisition.click()
    page.get_by_role("option").nth(1).click()
    _wait_idle(page)
    assert _poll(page, lambda: start_zoom - 1 in _zooms(responses, "mask", mark)), (start_zoom, _zooms(responses, "mask", mark))
    assert _poll(page, lambda: _map_zoom(page) == start_zoom - 1), (start_zoom, _map_zoom(page))

    # the disagreement layer renders
    mark = len(responses)
    _choose(page, "Left", "Disagreement (model vs product)")
    page.wait_for_timeout(4000)
    assert [u for u, status, ctype in responses[mark:] if "/disagreement/tiles/" in u and status == 200
            and ctype == "image/webp"], responses[mark:mark + 5]
    _shot(page, "06-compare-disagreement")

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
    _shot(page, "07-export")
    context.close()
    # nothing but the basemap was asked of any other origin: no CDN, not the app's own port
    hosts = {u.split("/")[2] for u in blocked + other_blocked}
    assert hosts <= {"tile.openstreetmap.org"}, hosts


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


STRIP_PREFIX = "/team"


def test_behind_a_proxy_that_strips_its_prefix(browser: Any, tmp_path_factory: pytest.TempPathFactory):
    """The other common proxy setup: nginx strips ``/team`` and says so in ``X-Forwarded-Prefix``; the app runs
    without a base URL path. The first page opened after the start is a deep link to Compare: it shows at once
    (no "Page not found"), its overlays arrive through ``/team/tiles/``, and a client such as QGIS gets TileJSON
    whose tile URLs carry the prefix."""
    from playwright.sync_api import expect

    from s2core import make_request, preprocess

    root = tmp_path_factory.mktemp("strip-runs")
    tmp = tmp_path_factory.mktemp("strip-nginx")
    manifest = preprocess(make_request(
        aoi="POLYGON((15.9 45.9, 16.1 45.9, 16.1 46.1, 15.9 46.1, 15.9 45.9))", start="2023-08-10",
        end="2023-08-13", catalog=str(MAPCHETE_CATALOG), bands="B02,B03,B04,B08", resolution=120, out_dir=root,
        masks={}))
    assert manifest.status == "completed", manifest.error
    app_port = free_port()
    with open(root.parent / "streamlit-strip.log", "w") as log:
        app = _start_app(root, app_port, log)
        try:
            with _proxy(tmp, app_port, STRIP_PREFIX, strip=True) as url:
                _wait_for(f"http://127.0.0.1:{app_port}/_stcore/health", "streamlit")
                _wait_for(f"{url}/_stcore/health", "nginx")
                blocked: list[str] = []
                context, page, responses = _tile_page(browser, blocked)
                page.goto(f"{url}/Compare")
                expect(page.get_by_text("Overall agreement")).to_be_visible(timeout=120_000)
                page.wait_for_timeout(3000)
                _shot(page, "08-compare-stripping-proxy")
                assert page.get_by_text("Page not found").count() == 0
                tiles = [u for u, status, ctype in responses if status == 200 and ctype == "image/webp"]
                assert tiles and all(u.startswith(f"{url}/tiles/runs/") for u in tiles), responses[:5]
                context.close()
                assert {u.split("/")[2] for u in blocked} <= {"tile.openstreetmap.org"}, blocked
                acq = manifest.acquisitions[0].id
                tj = requests.get(f"{url}/tiles/runs/{manifest.run_id}/{acq}/mask/tilejson.json", timeout=30).json()
                assert tj["tiles"][0].startswith(f"{url}/tiles/runs/{manifest.run_id}/{acq}/mask/tiles/"), tj
        finally:
            app.terminate()
            app.wait(timeout=20)
