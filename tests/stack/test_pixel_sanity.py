"""Pixel sanity: a band that decodes but holds physically impossible reflectances (bit flips, a wrong
scaling) is a corrupt asset, not a completed acquisition; real bands, cloudy ones included, pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from s2core import make_request, preprocess
from s2core.errors import AssetReadError
from s2core.model.radiometry import MAX_IMPLAUSIBLE_SHARE, implausible_share
from tests.conftest import INSIDE_TWM_WKT, mapchete_items, with_absolute_hrefs, needs_shared

ITEM_ID = "S2B_33TWM_20230813_0_L2A"


def _catalog_with_b04(tmp_path: Path, transform) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir()
    for item, path in mapchete_items():
        if item["id"] != ITEM_ID:
            continue
        it = with_absolute_hrefs(item, path)
        src = Path(it["assets"]["red"]["href"])
        with rasterio.open(src) as ds:
            data, profile = ds.read(1), ds.profile
        bad = tmp_path / "B04-bad.tif"
        profile.update(driver="GTiff", compress="deflate")
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(bad, "w", **profile) as ds:
            ds.write(transform(data), 1)
        it["assets"]["red"]["href"] = str(bad)
        (folder / f"{it['id']}.json").write_text(json.dumps(it))
    return folder


def _run(tmp_path: Path, catalog: Path):
    return preprocess(make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-13", catalog=str(catalog),
                                   bands="B04,B08", out_dir=tmp_path / "out", run_id="s"))


@needs_shared
def test_impossible_reflectances_fail_the_acquisition_as_corrupt(tmp_path: Path):
    flipped = _catalog_with_b04(tmp_path, lambda d: np.where(d > 0, np.minimum(d.astype(np.int32) * 10 + 16000, 65535),
                                                             0).astype(d.dtype))
    with pytest.raises(AssetReadError, match=r"B04 of S2B_33TWM_20230813_0_L2A is corrupt: \d+% of its valid pixels"):
        _run(tmp_path, flipped)
    assert not list((tmp_path / "out").rglob("raster.tif"))


@needs_shared
def test_real_bands_pass_the_check_cloudy_dates_included(tmp_path: Path):
    for item, path in mapchete_items():  # 0.2 % .. 68 % cloud
        for name in ("B02", "B04", "B08"):
            with rasterio.open(path.parent / f"{name}.tif") as ds:
                dn = ds.read(1)
            offset = -1000 if float(item["properties"].get("s2:processing_baseline", "5")) >= 4 else 0
            refl = np.where(dn > 0, np.clip(dn.astype(np.int32) + offset, 1, 65535), 0).astype(np.uint16)
            assert implausible_share(refl) < MAX_IMPLAUSIBLE_SHARE / 5, (item["id"], name)
