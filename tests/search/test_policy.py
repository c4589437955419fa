"""The access policy of restricted runs (the app): catalogs, redirects and asset locations are the
deployment's choice (S2_ALLOWED_STAC_HOSTS, S2_ALLOWED_ASSET_HOSTS, S2_CATALOG_ROOTS), never the user's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s2core import make_request, plan
from s2core.errors import PolicyViolation
from s2core.model.policy import AccessPolicy
from tests.conftest import INSIDE_TWM_WKT, MAPCHETE_CATALOG, SHARED, mapchete_items, with_absolute_hrefs, needs_shared
from tests.servers import FaultServer


def _request(catalog: str, restricted: bool = True):
    return make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-15", catalog=catalog, bands="B04,B08",
                        restricted=restricted, search_timeout=10)


def test_a_stac_host_outside_the_policy_is_never_contacted(tmp_path: Path):
    (tmp_path / "stac").write_text("{}")
    with FaultServer(tmp_path) as internal:
        with pytest.raises(PolicyViolation, match="does not search STAC APIs at '127.0.0.1'"):
            plan(_request(f"{internal.url}/ok/stac"))
        assert internal.seen("ok") == 0


def test_a_redirect_to_another_host_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "stac").write_text(json.dumps({"type": "Catalog", "id": "x", "stac_version": "1.0.0",
                                               "description": "x", "links": []}))
    monkeypatch.setenv("S2_ALLOWED_STAC_HOSTS", "127.0.0.1")
    with FaultServer(tmp_path) as api:
        with pytest.raises(PolicyViolation, match="redirects to 'localhost'"):
            plan(_request(f"{api.url}/redirect/stac"))
        assert api.seen("ok") == 0, "the redirect was followed"


@needs_shared
def test_local_catalogs_only_under_the_allowed_roots(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(PolicyViolation, match="does not read local catalogs"):
        plan(_request(str(MAPCHETE_CATALOG)))
    monkeypatch.setenv("S2_CATALOG_ROOTS", str(SHARED))
    acquisitions, _, _ = plan(_request(str(MAPCHETE_CATALOG)))
    assert acquisitions
    with pytest.raises(PolicyViolation, match="only under"):
        plan(_request("/"))


@needs_shared
def test_an_item_naming_files_or_hosts_outside_the_policy_is_refused_before_any_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for item, path in mapchete_items():
        it = with_absolute_hrefs(item, path)
        it["assets"]["red"]["href"] = "/etc/passwd"  # another run's raster, a secret: any path outside the roots
        it["assets"]["nir"]["href"] = "http://169.254.169.254/latest/meta-data"
        (catalog / f"{it['id']}.json").write_text(json.dumps(it))
    monkeypatch.setenv("S2_CATALOG_ROOTS", f"{SHARED}:{tmp_path}")
    monkeypatch.setenv("S2_ALLOWED_ASSET_HOSTS", "*.blob.core.windows.net")
    with pytest.raises(PolicyViolation, match="names an asset"):
        plan(_request(str(catalog)))
    acquisitions, _, _ = plan(_request(str(catalog), restricted=False))  # the CLI and Python API: open
    assert acquisitions


def test_policy_rules():
    open_ = AccessPolicy()
    assert open_.host_allowed("anything", ()) and open_.path_allowed("/etc")
    strict = AccessPolicy(True, ("planetarycomputer.microsoft.com",), ("*.blob.core.windows.net",), (Path("/srv/data"),))
    assert strict.host_allowed("sentinel2l2a01.blob.core.windows.net", strict.asset_hosts)
    assert not strict.host_allowed("blob.core.windows.net.evil.com", strict.asset_hosts)
    assert not strict.path_allowed("/srv/data/../etc/passwd") and strict.path_allowed("/srv/data/x/catalog.json")
    strict.check_catalog("pc")
    strict.check_catalog("https://planetarycomputer.microsoft.com/api/stac/v1")
    with pytest.raises(PolicyViolation):
        strict.check_catalog("http://10.0.0.5:8080/stac")
