"""preprocess + masks on the real mapchete-eo scenes: the `run` workflow end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from s2core import load_manifest, make_request, preprocess
from s2core.cli import main
from s2core.errors import ModelBandsMissing
from s2core.model.aoi import parse_aoi
from s2core.model.classes import CLOUD, NODATA, SHADOW
from s2core.model.grid import Grid, aoi_pixels
from tests.conftest import MAPCHETE_CATALOG, STRADDLE_WKT, WIDE_AOI, needs_shared

pytestmark = needs_shared

CLOUDY, CLEAR_DATES = ("20230810", "20230818"), ("20230813", "20230815")


def _run(out: Path, run_id: str, **masks: object):
    req = make_request(aoi=WIDE_AOI, start="2023-08-10", end="2023-08-20", catalog=str(MAPCHETE_CATALOG),
                       bands="B02,B03,B04,B08", resolution=120, out_dir=out, run_id=run_id, max_aoi_km2=10_000,
                       min_tile_cover=0.5, masks=masks)
    return preprocess(req)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("mask-runs")
    return out, _run(out, "mem", in_memory=True), _run(out, "stream", in_memory=False)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_cloudy_dates_get_far_more_cloud_and_agree_with_scl(runs):
    out, manifest, _ = runs
    assert manifest.status == "completed" and len(manifest.acquisitions) == 5
    model_cloud, iou = {}, {}
    for acq in manifest.acquisitions:
        folder = out / "mem" / acq.id
        prob = _read(folder / "cloud_prob.tif")
        product = _read(folder / "product_mask.tif")
        valid = product != NODATA
        cloud = valid & (prob != 255) & (prob > 0.3 * 250)
        scl_cloud = product == CLOUD
        date = acq.id[:8]
        model_cloud[date] = cloud.sum() / valid.sum()
        iou[date] = (cloud & scl_cloud).sum() / max(1, (cloud | scl_cloud).sum())
    print("model cloud fraction:", {k: round(float(v), 3) for k, v in model_cloud.items()})
    print("IoU with SCL clouds:", {k: round(float(v), 3) for k, v in iou.items()})
    assert min(model_cloud[d] for d in CLOUDY) > 20 * max(model_cloud[d] for d in CLEAR_DATES)
    assert min(model_cloud[d] for d in CLOUDY) > 0.25
    assert min(iou[d] for d in CLOUDY) > 0.6


def test_outputs_are_recorded_and_consistent(runs):
    out, manifest, _ = runs
    for acq in manifest.acquisitions:
        assert {"cloud_prob", "shadow_prob", "mask"} <= set(acq.outputs)
        assert acq.models["ukis-csmask-4b-l2a"]["roles"] == ["cloud", "shadow"]  # one model, run once
        folder = out / "mem" / acq.id
        item = json.loads((folder / "item.json").read_text())
        assert {"cloud_prob", "shadow_prob", "mask"} <= set(item["assets"])
        assert item["properties"]["s2core:cloud_models"] == ["ukis-csmask-4b-l2a"]
        mask = _read(folder / "mask.tif")
        raster_nodata = _read(folder / "raster.tif") == 0
        assert np.array_equal(mask == NODATA, raster_nodata)  # nodata is never called cloud
        with rasterio.open(folder / "cloud_prob.tif") as ds:
            assert ds.scales[0] == pytest.approx(0.004) and ds.nodata == 255 and ds.overviews(1)
            prob = ds.read(1)
        assert (prob[raster_nodata] == 255).all() and (prob[~raster_nodata] <= 250).all()
        masked = (mask == CLOUD) | (mask == SHADOW)
        with rasterio.open(folder / "mask.tif") as ds:  # the manifest's figures are the AOI's pixels
            inside = aoi_pixels(parse_aoi(WIDE_AOI), Grid(ds.crs.to_string(), ds.transform, ds.width, ds.height))
        inside = np.ones(mask.shape, bool) if inside is None else inside
        assert masked[~raster_nodata & inside].mean() == pytest.approx(
            acq.mask_fractions["cloud"] + acq.mask_fractions["shadow"], abs=1e-4)
        # every product-mask cloud is in the merged mask
        product = _read(folder / "product_mask.tif")
        assert masked[product == CLOUD].all()
    assert not list(out.rglob("*.part"))


def test_in_memory_and_streaming_give_identical_outputs(runs):
    out, mem, stream = runs
    assert [a.id for a in mem.acquisitions] == [a.id for a in stream.acquisitions]
    for acq in mem.acquisitions:
        for name in ("cloud_prob.tif", "shadow_prob.tif", "mask.tif"):
            assert np.array_equal(_read(out / "mem" / acq.id / name), _read(out / "stream" / acq.id / name)), name


def test_coarser_inference_resolution_runs_fewer_pixels(tmp_path: Path):
    common = dict(aoi=STRADDLE_WKT, start="2023-08-10", end="2023-08-10", catalog=str(MAPCHETE_CATALOG),
                  bands="B02,B03,B04,B08", resolution=60, out_dir=tmp_path)
    fine = preprocess(make_request(run_id="fine", masks={"inference_resolution": 60}, **common))
    coarse_mem = preprocess(make_request(run_id="coarse", masks={"inference_resolution": 120, "in_memory": True},
                                         **common))
    coarse_stream = preprocess(make_request(run_id="coarse-s", masks={"inference_resolution": 120}, **common))
    assert coarse_stream.status == "completed"
    f, c = fine.acquisitions[0], coarse_mem.acquisitions[0]
    assert c.models["ukis-csmask-4b-l2a"]["inference_resolution"] == 120
    assert f.models["ukis-csmask-4b-l2a"]["inference_resolution"] == 60
    folder = tmp_path / "coarse" / c.id
    with rasterio.open(folder / "cloud_prob.tif") as ds:
        assert ds.res == (60.0, 60.0)  # probabilities come back on the output grid
    assert np.array_equal(_read(folder / "mask.tif"), _read(tmp_path / "coarse-s" / c.id / "mask.tif"))
    cloud_f = _read(tmp_path / "fine" / f.id / "cloud_prob.tif") > 75
    cloud_c = _read(folder / "cloud_prob.tif") > 75
    assert (cloud_f == cloud_c).mean() > 0.85  # same clouds, seen at two pixel sizes


def test_cli_run_with_binary_mask_and_ensemble(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["-q", "run", "--aoi", STRADDLE_WKT, "--start", "2023-08-18", "--end", "2023-08-18",
                 "--catalog", str(MAPCHETE_CATALOG), "--bands", "B02,B03,B04,B08", "--resolution", "120",
                 "--out", str(tmp_path), "--run-id", "cli", "--binary-mask", "--cloud-thr", "0.5",
                 "--cloud-model", "ukis-csmask-4b-l2a,ukis-csmask-4b-l2a", "--min-area", "4"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "mask: cloud" in printed and "(product: cloud" in printed
    manifest = load_manifest(tmp_path / "cli")
    acq = manifest.acquisitions[0]
    assert manifest.parameters["masks"]["cloud_thr"] == 0.5
    assert manifest.parameters["masks"]["min_area"] == 4
    binary = _read(tmp_path / "cli" / acq.outputs["cloud_mask"])
    mask = _read(tmp_path / "cli" / acq.outputs["mask"])
    assert np.array_equal(binary == 1, (mask == CLOUD) | (mask == SHADOW))
    assert np.array_equal(binary == 255, mask == NODATA)


def test_cli_refuses_models_that_do_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = ["run", "--aoi", STRADDLE_WKT, "--start", "2023-08-18", "--end", "2023-08-18",
            "--catalog", str(MAPCHETE_CATALOG), "--bands", "B02,B03,B04,B08", "--out", str(tmp_path)]
    assert main(base + ["--cloud-model", "ukis-csmask-6b-l2a"]) == 2
    err = capsys.readouterr().err
    assert "needs band(s) B11, B12" in err and "--bands B02,B03,B04,B08,B11,B12" in err
    assert main(base + ["--shadow-model", "s2cloudless"]) == 2
    assert "no shadow output" in capsys.readouterr().err
    assert main(base + ["--cloud-model", "ukis-csmask-4b-l1c"]) == 2
    assert "is for L1C input but this raster is L2A" in capsys.readouterr().err
    assert main(base + ["--cloud-thr", "1.5"]) == 2
    assert "cloud_thr" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written
    with pytest.raises(ModelBandsMissing):
        make_request(aoi=STRADDLE_WKT, start="2023-08-18", end="2023-08-18", bands="B04,B08", masks={})


def test_progress_reports_the_masks_stage_and_cancel_stops_it(tmp_path: Path):
    from s2core import CancelToken
    from s2core.errors import Cancelled

    req = make_request(aoi=STRADDLE_WKT, start="2023-08-10", end="2023-08-13", catalog=str(MAPCHETE_CATALOG),
                       bands="B02,B03,B04,B08", resolution=120, out_dir=tmp_path, run_id="cancel", masks={})
    token = CancelToken()
    stages: list[str] = []

    def progress(event) -> None:  # noqa: ANN001
        stages.append(event.stage)
        if event.stage == "masks":
            token.cancel()  # cancel as soon as the first acquisition reaches the models

    with pytest.raises(Cancelled):
        preprocess(req, progress=progress, cancel=token)
    assert "masks" in stages
    manifest = load_manifest(tmp_path / "cancel")
    assert manifest.status == "cancelled"
    assert not manifest.acquisitions  # the interrupted acquisition is not presented as complete
    assert not list((tmp_path / "cancel").rglob("mask.tif")) and not list((tmp_path / "cancel").rglob("*.part"))
