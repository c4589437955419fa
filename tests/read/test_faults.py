"""Reads against a fault-injecting server on loopback (tests/servers.py FaultServer) serving real COGs:
retries reach the server, each failure gets its own precise message within dl_timeout, and nothing
unreadable ever appears under a final name."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
import rasterio

from s2core import make_request, preprocess
from s2core.errors import AssetReadError, AssetTimeout, S2CoreError
from tests.conftest import INSIDE_TWM_WKT, items_served_from, needs_shared
from tests.servers import FaultServer

DL_TIMEOUT = 8.0


@pytest.fixture(scope="module")
def faults(cog_tree: Path) -> Iterator[FaultServer]:
    with FaultServer(cog_tree) as server:
        yield server


def _catalog(tmp_path: Path, server: FaultServer, mode: str) -> Path:
    folder = tmp_path / f"catalog-{mode}"
    folder.mkdir()
    for item in items_served_from(server.url, prefix=mode):
        if "2023-08-13" <= item["properties"]["datetime"][:10] <= "2023-08-15":
            (folder / f"{item['id']}.json").write_text(json.dumps(item))
    return folder


def _run(tmp_path: Path, server: FaultServer, mode: str, **kw: object):
    req = make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-15", catalog=str(_catalog(tmp_path, server, mode)),
                       bands="B04,B08", out_dir=tmp_path / "out", run_id=mode, dl_timeout=DL_TIMEOUT, **kw)
    return preprocess(req)


def _assert_nothing_unreadable(run_dir: Path) -> None:
    assert not list(run_dir.rglob("*.part")), "temporary files left behind"
    for tif in run_dir.rglob("*.tif"):
        with rasterio.open(tif) as ds:  # every file under a final name opens and its last block reads
            ds.read(ds.count, window=((ds.height - 1, ds.height), (ds.width - 1, ds.width)))


@needs_shared
@pytest.mark.parametrize("mode", ["once503", "half500", "once403", "retry429"])
def test_transient_failures_are_retried_at_the_server_and_the_run_completes(tmp_path: Path, faults: FaultServer,
                                                                           mode: str):
    before = faults.seen(mode)
    manifest = _run(tmp_path, faults, mode)
    assert manifest.status == "completed", [(a.id, a.error) for a in manifest.acquisitions]
    assert len(manifest.acquisitions) == 2 and all(a.status == "completed" for a in manifest.acquisitions)
    failed = [s for s in faults.statuses[mode] if s >= 400]
    assert failed, "the fault was never injected"
    assert faults.seen(mode) - before > len(failed), "the retries never reached the server"
    _assert_nothing_unreadable(tmp_path / "out" / mode)


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("mode, error, needle", [
    ("all503", (AssetTimeout, AssetReadError), "HTTP 503"),
    ("truncated", AssetReadError, "the file is truncated"),
    ("corrupt", AssetReadError, "the file is corrupt"),
    ("html", AssetReadError, "is not a raster"),
    ("drip", AssetTimeout, "dl_timeout=8"),
])
def test_lasting_faults_fail_with_their_reason_within_the_deadline(tmp_path: Path, faults: FaultServer, mode: str,
                                                                   error: type[S2CoreError] | tuple, needle: str):
    t0 = time.monotonic()
    with pytest.raises(error) as info:
        _run(tmp_path, faults, mode)
    elapsed = time.monotonic() - t0
    assert needle in str(info.value), str(info.value)
    assert "?" not in str(info.value).split("from", 1)[-1].split(":", 1)[0]  # no query strings shown
    assert elapsed < 2 * (DL_TIMEOUT + 6), f"{elapsed:.1f} s for two acquisitions with dl_timeout={DL_TIMEOUT}"
    run_dir = tmp_path / "out" / mode
    doc = json.loads((run_dir / "manifest.json").read_text())
    assert doc["status"] == "failed" and all(a["status"] == "failed" for a in doc["acquisitions"])
    assert not list(run_dir.rglob("raster.tif")), "a failed acquisition left a raster"
    _assert_nothing_unreadable(run_dir)


@needs_shared
def test_a_rate_limit_is_waited_out_as_its_retry_after_says(cog_tree: Path):
    from affine import Affine

    from s2core.model.grid import Grid
    from s2core.read.reader import ReadPolicy, read_to_grid

    band = next(cog_tree.glob("*/B04.tif"))
    with rasterio.open(band) as ds:
        t, crs = ds.transform, ds.crs.to_string()
    grid = Grid(crs, Affine(120, 0, t.c + 12000, 0, -120, t.f - 12000), 50, 50)
    with FaultServer(cog_tree) as server:
        server.retry_after = 2
        t0 = time.monotonic()
        out = read_to_grid(f"{server.url}/retry429/{band.parent.name}/B04.tif", grid,
                           policy=ReadPolicy(timeout=15, max_retries=3), label="B04")
        elapsed = time.monotonic() - t0
    assert out.shape == (50, 50)
    assert 2.0 <= elapsed < 6.0, f"{elapsed:.1f} s: Retry-After: 2 not honoured"
    assert server.statuses["retry429"].count(429) >= 1 and 200 in server.statuses["retry429"] + [206]
