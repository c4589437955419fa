"""cloud_mask: cloudy/shadowed pixels of raster.tif set to NoData by product, model or merged masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from s2core import make_request, preprocess
from s2core.cli import main
from s2core.errors import InvalidParameter
from tests.conftest import MAPCHETE_CATALOG, STRADDLE_WKT, needs_shared

pytestmark = needs_shared


def _run(out: Path, run_id: str, date: str = "2023-08-20", **kw: object):
    return preprocess(make_request(aoi=STRADDLE_WKT, start=date, end=date,
                                   catalog=str(MAPCHETE_CATALOG), bands="B02,B03,B04,B08", resolution=120,
                                   out_dir=out, run_id=run_id, **kw))


def _read(path: Path, band: int | None = None) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band) if band else ds.read()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cloud-nodata")
    m = _run(out, "none", masks={})
    return out, m.acquisitions[0].id


@pytest.mark.parametrize("mode", ["product", "model", "merged"])
def test_cloudy_pixels_become_nodata_and_the_rest_is_unchanged(plain, mode: str):
    out, acq = plain
    m = _run(out, mode, masks={}, cloud_mask=mode)
    rec = m.acquisitions[0]
    folder = out / "none" / acq
    before = _read(folder / "raster.tif")
    after = _read(out / mode / acq / "raster.tif")
    if mode == "product":
        mask = _read(folder / "product_mask.tif", 1)
        hit = np.isin(mask, (2, 3))
    elif mode == "merged":
        hit = np.isin(_read(folder / "mask.tif", 1), (2, 3))
    else:
        cloud, shadow = _read(folder / "cloud_prob.tif", 1), _read(folder / "shadow_prob.tif", 1)
        # the U-Net's own decision (its card: argmax over clear = 1 - cloud - shadow, cloud, shadow)
        c, s = cloud / np.float32(250), shadow / np.float32(250)
        probs = np.stack([1 - c - s, c, s])
        hit = (cloud != 255) & (shadow != 255) & (np.argmax(probs, axis=0) != 0)
    valid = before[0] != 0
    hit &= valid
    assert 0.01 < hit.sum() / valid.sum() < 0.9  # something to blank, something kept
    assert np.all(after[:, hit] == 0)
    assert np.array_equal(after[:, ~hit], before[:, ~hit])
    assert rec.cloud_nodata_fraction == pytest.approx(hit.sum() / valid.sum(), abs=1e-6)
    # the masks themselves are not touched
    assert np.array_equal(_read(out / mode / acq / "mask.tif"), _read(folder / "mask.tif"))
    with rasterio.open(out / mode / acq / "raster.tif") as ds:
        assert ds.tags()["CLOUD_MASK"] == mode and ds.descriptions[0].startswith("B02") and ds.scales[0] == 1e-4
        assert ds.overviews(1) == [] or ds.is_tiled


def test_product_mode_needs_no_models_and_model_modes_do(tmp_path: Path):
    m = _run(tmp_path, "p", date="2023-08-10", cloud_mask="product")
    assert m.acquisitions[0].cloud_nodata_fraction > 0.3
    with pytest.raises(InvalidParameter, match="needs the cloud/shadow models"):
        _run(tmp_path, "x", cloud_mask="merged")
    code = main(["-q", "preprocess", "--aoi", STRADDLE_WKT, "--start", "2023-08-10", "--end", "2023-08-10",
                 "--catalog", str(MAPCHETE_CATALOG), "--bands", "B02,B03,B04,B08", "--resolution", "120",
                 "--out", str(tmp_path), "--cloud-mask", "model"])
    assert code == 2
