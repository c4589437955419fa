"""The masks stage's physics and figures on real data: model-card decisions, sizes in metres, the shadow
check in the pipeline, honest inference resolution, and cloud statistics over the AOI (``stats``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from s2core import load_manifest, make_request, preprocess
from s2core.cli import main
from s2core.errors import InvalidParameter
from s2core.masks.engine import get_session, prepare_input
from s2core.masks.registry import decision_for, farmvibes_card, get_card, resolve_mask_options
from s2core.masks.stage import ArraySource, combined_probability, mask_acquisition, run_models
from s2core.model.classes import CLOUD, NODATA, SHADOW
from s2core.model.grid import Grid
from s2core.model.request import MaskOptions, parse_request
from tests.conftest import MAPCHETE_CATALOG, WIDE_AOI, needs_shared
from tests.masks.test_models_registry import SIX, needs_rkh, rkh_six_bands

REFERENCE = dict(shadow_check="off", dilation=5, cloud_thr=0.3, shadow_thr=0.2)


@needs_rkh
@pytest.mark.parametrize("name", ["ukis-csmask-6b-l2a", "ukis-csmask-4b-l2a"])
def test_the_u_nets_card_decision_is_their_own_argmax_on_real_pixels(name: str):
    card = get_card(name)
    options = resolve_mask_options(MaskOptions(cloud_model=(name,), shadow_model=name), tuple(card.bands))
    decision = decision_for(options)
    assert decision.rule == "argmax"
    image = rkh_six_bands(256)[[SIX.index(b) for b in card.bands]]
    logits = get_session(card).run(prepare_input(card, image)[None].astype(np.float32))[0]
    own = np.argmax(logits, axis=0)  # the network's own decision: its highest logit
    p = np.exp(logits - logits.max(axis=0))
    p /= p.sum(axis=0)
    cloud, shadow = decision.flags(p[1], p[2])
    ours = np.where(cloud, 1, np.where(shadow, 2, 0))
    assert 0.001 < (own != 0).mean() and (ours == own).mean() >= 0.9999


def test_other_cards_keep_their_own_thresholds_and_given_thresholds_win(tmp_path: Path):
    s2c = decision_for(MaskOptions(cloud_model=("s2cloudless",), shadow_model="ukis-csmask-6b-l1c"))
    assert (s2c.rule, s2c.cloud_thr, s2c.shadow_thr) == ("threshold", 0.4, 0.5)
    fv = farmvibes_card(tmp_path / "cloud.onnx", "cloud").decision
    assert (fv.rule, fv.cloud_thr) == ("threshold", 0.3)
    given = decision_for(MaskOptions(cloud_model=("ukis-csmask-6b-l2a",), shadow_model="ukis-csmask-6b-l2a",
                                     cloud_thr=0.3, shadow_thr=0.2))
    assert given.to_dict() == {"rule": "threshold", "cloud_thr": 0.3, "shadow_thr": 0.2}


@pytest.mark.parametrize("pixel, px", [(10.0, 5), (20.0, 3), (60.0, 1), (120.0, 0)])
def test_dilation_and_min_area_in_metres(pixel: float, px: int):
    assert MaskOptions().dilation_px(pixel) == px  # 50 m
    assert MaskOptions(dilation=5).dilation_px(pixel) == 5  # the reference's pixels stay available
    assert MaskOptions(dilation_m=120.0).dilation_px(pixel) == round(120.0 / pixel)
    assert MaskOptions(min_area_m2=40_000.0).min_area_px(pixel) == round(40_000.0 / pixel ** 2)
    assert MaskOptions().min_area_px(pixel) == 0


@pytest.mark.parametrize("masks, message", [
    ({"dilation": 5, "dilation_m": 50.0}, "Give dilation \\(pixels\\) or dilation_m"),
    ({"min_area": 5, "min_area_m2": 50.0}, "Give min_area \\(pixels\\) or min_area_m2"),
    ({"min_cloud_height": 5000.0, "max_cloud_height": 1000.0}, "swap them"),
    ({"dilation_m": -1.0}, "dilation_m"),
])
def test_one_unit_per_size_and_ordered_heights(masks: dict, message: str):
    with pytest.raises(InvalidParameter, match=message):
        parse_request(aoi=WIDE_AOI, start="2023-08-10", end="2023-08-20", max_aoi_km2=10_000, masks=masks)


def _reference_merge(cloud: np.ndarray, shadow: np.ndarray, product: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """FarmVibes.AI's merge_cloud_masks_simple, written out: thresholds 0.3/0.2, OR with the product's
    cloud/shadow, dilation by a disk of radius 5 (nodata never masked)."""
    y, x = np.ogrid[-5:6, -5:6]
    disk = x * x + y * y <= 25
    cloud_hit = ((cloud > 0.3) & valid) | (product == CLOUD)
    shadow_hit = ((shadow > 0.2) & valid) | (product == SHADOW)
    return (ndimage.binary_dilation(cloud_hit, disk) | ndimage.binary_dilation(shadow_hit, disk)) & valid


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if not MAPCHETE_CATALOG.exists():
        pytest.skip(f"shared data not found at {MAPCHETE_CATALOG}")
    out = tmp_path_factory.mktemp("physics")
    kw = dict(aoi=WIDE_AOI, start="2023-08-10", end="2023-08-20", catalog=str(MAPCHETE_CATALOG),
              bands="B02,B03,B04,B08", resolution=120, out_dir=out, max_aoi_km2=10_000, min_tile_cover=0.5)
    return {"out": out, "filter": preprocess(make_request(**kw, run_id="filter", masks={})),
            "off": preprocess(make_request(**kw, run_id="off", masks=dict(REFERENCE)))}


@needs_shared
def test_reference_parameters_reproduce_the_reference_merge_bit_for_bit(runs: dict, tmp_path: Path):
    """shadow_check=off, dilation 5, 0.3 / 0.2: the merged mask is the reference's mask, pixel for pixel."""
    out = runs["out"]
    acq = next(a for a in runs["off"].acquisitions if a.id.startswith("20230820"))  # clouds and clear land
    folder = Path(out) / "off" / acq.id
    with rasterio.open(folder / "raster.tif") as ds:
        data = ds.read()
        grid = Grid(ds.crs.to_string(), ds.transform, ds.width, ds.height)
    with rasterio.open(folder / "product_mask.tif") as ds:
        product = ds.read(1)
    bands = ("B02", "B03", "B04", "B08")
    options = resolve_mask_options(MaskOptions(**REFERENCE), bands)
    result = mask_acquisition(options, ArraySource(data), product, bands, grid, tmp_path)
    runs_ = run_models(options, ArraySource(data), bands, grid)
    cloud = combined_probability(runs_, "cloud", grid, 0, grid.height)
    shadow = combined_probability(runs_, "shadow", grid, 0, grid.height)
    valid = (data != 0).all(axis=0)
    with rasterio.open(tmp_path / "mask.tif") as ds:
        merged = ds.read(1)
    expected = _reference_merge(cloud, shadow, product, valid)
    assert 0.005 < expected[valid].mean() < 0.9
    assert np.array_equal((merged == CLOUD) | (merged == SHADOW), expected)
    assert result.merge["decision"] == {"rule": "threshold", "cloud_thr": 0.3, "shadow_thr": 0.2}
    assert result.merge["shadow_check"] == {"mode": "off"} and result.merge["dilation_px"] == 5
    assert np.array_equal(merged, _read(folder / "mask.tif"))  # the pipeline wrote the same


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@needs_shared
def test_the_shadow_check_drops_shadows_without_a_cloud_and_records_it(runs: dict):
    out = Path(runs["out"])
    by_date = {a.id[:8]: a for a in runs["filter"].acquisitions}
    ref = {a.id[:8]: a for a in runs["off"].acquisitions}
    clear_day = by_date["20230815"]  # tile cloud 0.2 %: nothing in reach casts a shadow
    check = clear_day.merge["shadow_check"]
    assert check["mode"] == "filter" and check["min_cloud_height"] == 200.0 and check["max_cloud_height"] == 12000.0
    assert check["context"] == "product clouds around the AOI"
    assert check["dropped_share"] > 0.5, check
    assert clear_day.mask_fractions["shadow"] < ref["20230815"].mask_fractions["shadow"] / 3
    assert clear_day.merge["decision"] == {"rule": "argmax"} and clear_day.merge["dilation_m"] == 0.0  # 50 m at 120 m
    cloudy = by_date["20230810"]  # real clouds: their shadows survive
    assert cloudy.merge["shadow_check"]["dropped_share"] < 0.05
    assert cloudy.mask_fractions["shadow"] > 0.1
    # every shadow pixel left lies in the corridor of a cloud: the mask says so, the tag too
    with rasterio.open(out / "filter" / clear_day.id / "mask.tif") as ds:
        assert ds.tags()["SHADOW_CHECK"] == "filter" and "argmax" in ds.tags()["DECISION"]


@needs_shared
def test_models_run_at_their_source_pixels_and_say_when_those_are_too_coarse(runs: dict, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]):
    acq = runs["filter"].acquisitions[0]
    model = acq.models["ukis-csmask-4b-l2a"]
    assert model["inference_resolution"] == 120.0 and model["native_resolution"] == 30.0
    assert "4x coarser" in model["warning"] and acq.warnings == [model["warning"]]
    # a 60 m grid from 120 m files: the model still runs at 120 m (its bands hold nothing finer)
    code = main(["-q", "run", "--aoi", "POLYGON((15.9 46.3, 16.0 46.3, 16.0 46.4, 15.9 46.4, 15.9 46.3))",
                 "--start", "2023-08-15", "--end", "2023-08-15", "--catalog", str(MAPCHETE_CATALOG),
                 "--bands", "B02,B03,B04,B08", "--resolution", "60", "--out", str(tmp_path), "--run-id", "r60"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "warning: ukis-csmask-4b-l2a was trained on 30 m pixels but its bands come from 120 m" in printed
    model = load_manifest(tmp_path / "r60").acquisitions[0].models["ukis-csmask-4b-l2a"]
    assert model["inference_resolution"] == 120.0


@needs_shared
def test_stats_ranks_dates_by_clear_share_of_the_aoi(runs: dict, capsys: pytest.CaptureFixture[str]):
    out = Path(runs["out"])
    assert main(["stats", str(out / "filter"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    dates = doc["dates"]
    clear = [d["clear"] for d in dates]
    assert clear == sorted(clear, reverse=True) and len(dates) == len(runs["filter"].acquisitions)
    for d in dates:  # shares of the AOI: the classes and nodata add up to one
        assert sum(d[k] for k in ("clear", "cloud", "shadow", "snow", "defective", "nodata")) == pytest.approx(1, abs=1e-5)
        rec = next(a for a in runs["filter"].acquisitions if a.id == d["acquisition"])
        assert d["cloud"] == pytest.approx(rec.mask_fractions["cloud"] * (1 - rec.mask_fractions["nodata"]), abs=1e-6)
    assert dates[0]["date"] in ("2023-08-15", "2023-08-13") and dates[-1]["date"] == "2023-08-10"
    # a batch's output folder: one table of fields x dates
    assert main(["stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Clear share of each field's AOI by date:" in text and "filter" in text and "off" in text
    assert main(["stats", str(out / "filter"), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run_id,acquisition,date,source,clear") and len(lines) == len(dates) + 1
    assert main(["stats", str(out / "nowhere")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_the_shadow_check_is_off_without_sun_angles_and_says_so():
    from s2core.masks.shadow_check import geometry_of, shadow_check
    from s2core.model.scene import ViewAngles
    from s2core.stack.context import CloudContext, context_grid

    grid = Grid("EPSG:32633", rasterio.Affine(10, 0, 500000, 0, -10, 5000000), 50, 50)
    shadow = np.zeros((50, 50), dtype=bool)
    shadow[5:10, 5:10] = True
    product = np.ones((50, 50), dtype=np.uint8)
    check = shadow_check(MaskOptions(), np.zeros_like(shadow), shadow, product, ViewAngles(), grid, None)
    assert check.possible is None and "no usable sun angles" in check.warning
    sun = ViewAngles(sun_azimuth=150.0, sun_elevation=40.0)
    check = shadow_check(MaskOptions(), np.zeros_like(shadow), shadow, product, sun, grid, None)
    # without the surroundings, a cloud beyond the grid could cast anything: kept, and said so
    assert check.possible is not None and check.possible[5:10, 5:10].all()
    assert check.record["dropped_pixels"] == 0 and check.record["context"].startswith("none")
    # surroundings known to be cloud-free: nothing can cast it
    ctx_grid, factor, offset, complete = context_grid(grid, geometry_of(sun), 12_000.0)
    clear_sky = CloudContext(np.zeros(ctx_grid.shape, dtype=bool), factor, offset, complete)
    check = shadow_check(MaskOptions(), np.zeros_like(shadow), shadow, product, sun, grid, clear_sky)
    assert not check.possible[5:10, 5:10].any() and check.record["dropped_pixels"] == 25
    # a product cloud inside the grid, sunward of the shadow, keeps it
    product[31:36, 20:25] = CLOUD  # 300 m south-south-east of it: a 250 m high cloud
    check = shadow_check(MaskOptions(), np.zeros_like(shadow), shadow, product, sun, grid, clear_sky)
    assert check.record["dropped_pixels"] < 25
    product[40:45, 40:45] = NODATA  # nodata is not cloud
    assert shadow_check(MaskOptions(shadow_check="off"), np.zeros_like(shadow), shadow, product,
                        ViewAngles(sun_azimuth=150.0, sun_elevation=40.0), grid, None).possible is None
