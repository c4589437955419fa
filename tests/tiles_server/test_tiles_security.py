"""The tile server reads only files inside its root, addressed by ids: every route is attacked.

The root holds a real run (``good``) and three traps: ``escape`` is a symlink to a run folder
outside the root, ``tampered``'s manifest points its outputs outside (relative and absolute),
and ``linked`` has a mask file that is a symlink to a file outside. A secret GeoTIFF and a
secret text file sit outside the root; no response may be a tile of them or contain them.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import morecantile
import numpy as np
import pytest
import rasterio
import requests

from tests.conftest import needs_shared
from tests.servers import TilesServer

pytestmark = needs_shared

MARKER = "TOP-SECRET-7f3a"
FORBIDDEN_PARAMS = {"url", "path", "file", "filename", "src", "src_path", "href", "uri", "dataset", "input"}
EXPECTED_ROUTES = {
    "/healthz", "/runs", "/runs/{run_id}", "/runs/{run_id}/{acquisition_id}/agreement",
    "/runs/{run_id}/{acquisition_id}/{layer}/tilejson.json",
    "/runs/{run_id}/{acquisition_id}/{layer}/tiles/{z}/{x}/{y}.{format}",
    "/runs/{run_id}/{acquisition_id}/{layer}/legend", "/runs/{run_id}/{acquisition_id}/{layer}/statistics",
    "/colorMaps", "/colorMaps/{colorMapId}",
}


def _attacks(secret_tif: Path, secret_txt: Path) -> list[str]:
    return [
        "..", "../..", "../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "%2e%2e%2f%2e%2e",
        "%252e%252e%252f", "....//....//", "..\\..\\windows", str(secret_tif), str(secret_txt), "/etc/passwd",
        "file:///etc/passwd", f"file://{secret_tif}", "http://127.0.0.1:1/x.tif", "https://example.com/x.tif",
        "s3://bucket/key.tif", "/vsicurl/http://example.com/x.tif", "escape",
        ".hidden", "-rf", "good/../good", "x" * 300, "%00", "good%00", "\u202e",
    ]


@pytest.fixture(scope="module")
def trap_root(masked_runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("security")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copytree(masked_runs_root / "wide", root / "good")
    manifest = json.loads((root / "good" / "manifest.json").read_text())
    acq = manifest["acquisitions"][0]["id"]

    secret_tif = outside / "secret.tif"
    shutil.copy(root / "good" / acq / "mask.tif", secret_tif)
    with rasterio.open(secret_tif, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.update_tags(SECRET=MARKER)
        ds.write(np.full((ds.height, ds.width), 2, dtype=np.uint8), 1)  # "all cloud": a served secret would show
    secret_txt = outside / "secret.txt"
    secret_txt.write_text(f"root:x:0:0:{MARKER}\n")

    shutil.copytree(root / "good", outside / "escaped-run")
    (root / "escape").symlink_to(outside / "escaped-run", target_is_directory=True)

    shutil.copytree(root / "good", root / "tampered")
    doc = json.loads((root / "tampered" / "manifest.json").read_text())
    doc["acquisitions"][0]["outputs"]["mask"] = "../../outside/secret.tif"
    doc["acquisitions"][0]["outputs"]["product_mask"] = str(secret_tif)
    doc["acquisitions"][0]["outputs"]["raster"] = f"file://{secret_tif}"
    vrt = f'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>' \
          f'<SourceFilename>{secret_tif}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>' \
          f'</VRTDataset>'
    (root / "tampered" / acq / "evil.vrt").write_text(vrt)
    (root / "tampered" / acq / "evil.tif").write_text(vrt)
    doc["acquisitions"][0]["outputs"]["cloud_prob"] = f"{acq}/evil.vrt"
    doc["acquisitions"][0]["outputs"]["shadow_prob"] = f"{acq}/evil.tif"
    (root / "tampered" / "manifest.json").write_text(json.dumps(doc))

    shutil.copytree(root / "good", root / "linked")
    (root / "linked" / acq / "mask.tif").unlink()
    (root / "linked" / acq / "mask.tif").symlink_to(secret_tif)
    return {"root": root, "acq": acq, "secret_tif": secret_tif, "secret_txt": secret_txt}


@pytest.fixture(scope="module")
def server(trap_root: dict[str, Any]):
    with TilesServer(trap_root["root"]) as srv:
        yield srv


def _raw_get(server: TilesServer, raw_path: str) -> tuple[int, bytes]:
    """GET exactly ``raw_path`` (no client-side normalisation or re-encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _center_tile(server: TilesServer, acq: str) -> morecantile.Tile:
    tj = requests.get(f"{server.url}/runs/good/{acq}/mask/tilejson.json", timeout=10).json()
    return morecantile.tms.get("WebMercatorQuad").tile(tj["center"][0], tj["center"][1], 11)


def _no_leak(body: bytes, trap: dict[str, Any]) -> None:
    text = body.decode("latin-1")
    assert MARKER not in text and "root:x:" not in text
    assert str(trap["root"]) not in text and str(trap["secret_tif"].parent) not in text


def test_only_the_known_routes_exist_and_none_takes_a_path_or_url(server: TilesServer):
    schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert set(schema["paths"]) == EXPECTED_ROUTES, "a route was added: extend the attack tests for it"
    for path, methods in schema["paths"].items():
        assert set(methods) == {"get"}, path
        names = {p["name"].lower() for m in methods.values() for p in m.get("parameters", [])}
        assert not names & FORBIDDEN_PARAMS, (path, names)


def test_every_route_rejects_traversal_urls_and_trap_runs(server: TilesServer, trap_root: dict[str, Any]):
    schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    acq = trap_root["acq"]
    tile = _center_tile(server, acq)
    good = {"run_id": "good", "acquisition_id": acq, "layer": "mask", "z": str(tile.z), "x": str(tile.x),
            "y": str(tile.y), "format": "png", "colorMapId": "viridis"}
    attacks = _attacks(trap_root["secret_tif"], trap_root["secret_txt"])
    checked, pairs, expected = 0, set(), set()
    for template in schema["paths"]:
        params = re.findall(r"{(\w+)}", template)
        expected |= {(template, p) for p in params}
        # a route with valid ids answers 200 and ignores any url= the client adds
        ok_path = template.format(**good)
        clean = requests.get(server.url + ok_path, timeout=30)
        assert clean.status_code == 200, (ok_path, clean.text)
        smuggled = requests.get(server.url + ok_path, params={"url": str(trap_root["secret_tif"])}, timeout=30)
        assert smuggled.status_code == 200 and smuggled.content == clean.content, ok_path
        _no_leak(smuggled.content, trap_root)
        for name in set(params):
            for attack in attacks:
                for encoded in {quote(attack, safe=""), quote(attack, safe="/:%")}:
                    path = template.format(**{**good, name: encoded})
                    status, body = _raw_get(server, path)
                    assert status in (400, 404), (path, status, body[:200])
                    _no_leak(body, trap_root)
                    checked += 1
                    pairs.add((template, name))
    assert pairs == expected and len(expected) == 20 and checked > 500


def test_trap_runs_are_not_listed_and_not_served(server: TilesServer, trap_root: dict[str, Any]):
    runs = {r["run_id"] for r in requests.get(f"{server.url}/runs", timeout=10).json()}
    assert "good" in runs and "escape" not in runs
    acq = trap_root["acq"]
    tile = _center_tile(server, acq)
    for run, layer in (("escape", "mask"), ("tampered", "mask"), ("tampered", "product_mask"),
                       ("tampered", "rgb"), ("tampered", "cloud_prob"), ("tampered", "shadow_prob"),
                       ("linked", "mask")):
        for suffix in ("tilejson.json", f"tiles/{tile.z}/{tile.x}/{tile.y}.png", "statistics"):
            resp = requests.get(f"{server.url}/runs/{run}/{acq}/{layer}/{suffix}", timeout=10)
            assert resp.status_code == 404, (run, layer, suffix, resp.status_code)
            _no_leak(resp.content, trap_root)
    # the untouched outputs of the tampered and linked runs are still served
    assert requests.get(f"{server.url}/runs/linked/{acq}/rgb/tilejson.json", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/runs/tampered/{acq}/scl/tilejson.json", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/runs/linked/{acq}/agreement", timeout=10).status_code == 404


def test_raw_dot_segments_never_reach_the_file_system(server: TilesServer, trap_root: dict[str, Any]):
    acq = trap_root["acq"]
    for raw in ("/runs/../../etc/passwd", f"/runs/good/../escape/{acq}/mask/tilejson.json",
                f"/runs/good/{acq}/../../../outside/secret.tif", "/runs/%2e%2e/%2e%2e/etc/passwd/tilejson.json",
                f"/runs/good/{acq}/mask/tiles/11/..%2f..%2f/0.png", "//etc/passwd", "/runs//etc/passwd",
                "/runs/good%2F..%2F..%2Foutside/x/mask/legend"):
        status, body = _raw_get(server, raw)
        assert status in (400, 404), (raw, status)
        _no_leak(body, trap_root)
