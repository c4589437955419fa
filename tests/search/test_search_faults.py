"""A STAC search is bounded: an API that drips its answer, fails with 5xx or does not listen gives a one-line
error within --search-timeout, with no library log lines on the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from s2core import make_request, plan
from s2core.errors import CatalogResponseError, CatalogUnreachable
from tests.conftest import INSIDE_TWM_WKT, ROOT, one_line_error
from tests.servers import FaultServer, free_port

LANDING = {"type": "Catalog", "id": "api", "stac_version": "1.0.0", "description": "x", "links": [],
           "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    root = tmp_path_factory.mktemp("api")
    (root / "stac").write_text(json.dumps(LANDING))
    (root / "slow").write_text(json.dumps({**LANDING, "description": "x" * 20000}))  # drips for minutes
    with FaultServer(root) as server:
        yield server


def _request(url: str, search_timeout: float = 6.0):
    return make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-15", catalog=url, bands="B04",
                        search_timeout=search_timeout)


def test_an_api_that_drips_is_given_up_at_the_search_timeout(api: FaultServer):
    t0 = time.monotonic()
    with pytest.raises(CatalogUnreachable, match=r"did not answer the search within 6 s"):
        plan(_request(f"{api.url}/drip/slow"))
    assert time.monotonic() - t0 < 6 + 3


def test_an_api_failing_with_503_is_retried_then_explained(api: FaultServer):
    before = api.seen("all503")
    t0 = time.monotonic()
    with pytest.raises((CatalogResponseError, CatalogUnreachable)) as info:
        plan(_request(f"{api.url}/all503/stac", search_timeout=30))
    assert api.seen("all503") - before >= 3, "the search was not retried"
    assert "503" in str(info.value) and time.monotonic() - t0 < 30


def test_an_api_answering_once_503_then_ok_is_used(api: FaultServer):
    with pytest.raises(Exception) as info:  # the landing page loads after the retry; /search is a 404 here
        plan(_request(f"{api.url}/once503/stac", search_timeout=30))
    assert api.statuses["once503"][:2] == [503, 200], api.statuses["once503"]
    assert "HTTP 503" not in str(info.value) and "Service Unavailable" not in str(info.value)


def test_cli_unreachable_api_is_one_line_without_retry_warnings(tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}/stac"
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "s2core", "search", "--aoi", INSIDE_TWM_WKT, "--start", "2023-08-13",
                          "--end", "2023-08-15", "--catalog", url, "--search-timeout", "20"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    one_line_error(res, "Cannot reach the STAC API")
    assert "Retrying" not in res.stderr and time.monotonic() - t0 < 25
