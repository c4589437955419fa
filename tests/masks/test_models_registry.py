"""Model registry, s2cloudless ONNX parity, ukis-csmask parity, predict() and bad models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper
from rasterio.enums import Resampling

from s2core import predict
from s2core.errors import InvalidModel, InvalidParameter, ModelBandsMissing, UnknownModel
from s2core.masks.engine import clear_sessions, get_session
from s2core.masks.merge import s2cloudless_mask
from s2core.masks.registry import FARMVIBES_BANDS, get_card, model_bytes, registered_cards
from s2core.masks.s2cloudless_onnx import build_s2cloudless_onnx, float32_floor
from tests.conftest import RKH, ROOT, SHARED

PEER = SHARED / "l1c" / "s2cloudless-peer" / "input_arrays.npz"
SIX = ["B02", "B03", "B04", "B08", "B11", "B12"]
UKIS_NAMES = ["blue", "green", "red", "nir", "swir16", "swir22"]

needs_peer = pytest.mark.skipif(not PEER.exists(), reason=f"s2cloudless reference arrays not found at {PEER}")
needs_rkh = pytest.mark.skipif(not (RKH / "B12.tif").exists(), reason=f"29RKH bands not found at {RKH}")


def rkh_six_bands(size: int, resampling: Resampling = Resampling.average) -> np.ndarray:
    """The 6 bands of 29RKH as reflectance (6, size, size) on one grid."""
    out = []
    for b in SIX:
        with rasterio.open(RKH / f"{b}.tif") as ds:
            out.append(ds.read(1, out_shape=(size, size), resampling=resampling).astype(np.float32) / 10000)
    return np.stack(out)


def test_every_card_is_complete_and_lists_in_the_cli(capsys: pytest.CaptureFixture[str]):
    from s2core.cli import main

    cards = registered_cards()
    assert {"ukis-csmask-4b-l1c", "ukis-csmask-4b-l2a", "ukis-csmask-6b-l1c", "ukis-csmask-6b-l2a",
            "s2cloudless"} <= set(cards)
    for card in cards.values():
        assert card.bands and card.roles and card.licence != "unknown" and card.native_resolution > 0
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in cards:
        assert any(line.startswith(name + " ") for line in lines), name


@pytest.mark.parametrize("variant", ["4b_l1c", "4b_l2a", "6b_l1c", "6b_l2a"])
def test_ukis_cards_carry_the_package_statistics(variant: str):
    import ukis_csmask

    meta = json.loads((Path(ukis_csmask.__file__).parent / f"model_{variant}.json").read_text())
    card = get_card(f"ukis-csmask-{variant.replace('_', '-')}")
    stats = meta["data"]["dataset_statistics"]
    assert list(card.input.mean) == stats["img"][0]
    assert list(card.input.std) == stats["img"][1]
    assert card.spatial.patch_size == meta["data"]["target_size"][0]
    assert len(card.bands) == len(stats["band_names"]) == meta["data"]["in_channels"]
    assert card.product_level == variant[-3:].upper()


def test_float32_floor_never_rounds_up():
    rng = np.random.default_rng(0)
    for t in rng.normal(0, 1, 2000):
        f = float32_floor(float(t))
        assert f <= t and float(np.float32(f)) == f
        above = float(np.nextafter(np.float32(f), np.float32(np.inf)))
        assert above > t


@needs_peer
@pytest.mark.slow
def test_s2cloudless_onnx_matches_the_peer_reference(tmp_path: Path):
    built = build_s2cloudless_onnx(tmp_path / "s2cloudless.onnx")  # the reproducible build step itself
    assert onnx.load(str(built)).graph.node[0].op_type.startswith("TreeEnsemble")
    ref = np.load(PEER)
    image = ref["s2_im"][0]  # (856, 512, 13) L1C reflectance, B01..B12 with B8A after B08
    all13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    result = predict(np.moveaxis(image, -1, 0), all13, "s2cloudless")
    expected = ref["cl_probs"][0]
    assert np.abs(result.cloud_prob - expected).max() < 1e-5
    assert not result.shadow_prob.any()  # cloud-only model
    mask = s2cloudless_mask(result.cloud_prob, **get_card("s2cloudless").postprocess)
    assert np.array_equal(mask, ref["cl_mask"][0].astype(np.uint8))
    assert 0.4 < mask.mean() < 0.5


@needs_rkh
def test_ukis_parity_with_csmask_on_real_pixels():
    from ukis_csmask.mask import CSmask

    image = rkh_six_bands(549)  # 29RKH at 200 m, where all six bands are native
    ours = predict(image, SIX, "ukis-csmask-6b-l2a")
    clear = 1 - ours.cloud_prob - ours.shadow_prob
    classes = np.argmax(np.stack([clear, ours.cloud_prob, ours.shadow_prob]), axis=0)
    peer = CSmask(np.ascontiguousarray(np.moveaxis(image, 0, -1)), UKIS_NAMES, product_level="l2a").csm[..., 0]
    agreement = float((classes == peer).mean())
    assert agreement >= 0.98, agreement
    assert np.allclose(ours.cloud_prob + ours.shadow_prob <= 1 + 1e-5, True)


@needs_rkh
def test_predict_accepts_any_band_order_and_rejects_missing_bands():
    image = rkh_six_bands(128)
    base = predict(image, SIX, "ukis-csmask-6b-l2a")
    order = [5, 3, 0, 4, 1, 2]
    shuffled = predict(image[order], [SIX[i] for i in order], "ukis-csmask-6b-l2a")
    assert np.array_equal(base.cloud_prob, shuffled.cloud_prob)
    named = predict(image, ["blue", "green", "red", "nir", "swir16", "swir22"], "ukis-csmask-6b-l2a")
    assert np.array_equal(base.cloud_prob, named.cloud_prob)
    with pytest.raises(ModelBandsMissing, match=r"needs band\(s\) B11, B12.*has only B02, B03, B04, B08"):
        predict(image[:4], SIX[:4], "ukis-csmask-6b-l2a")
    with pytest.raises(ModelBandsMissing, match="B10"):
        predict(image, SIX, "s2cloudless")


def test_predict_rejects_bad_arrays():
    img = np.zeros((4, 32, 32), dtype=np.float32)
    with pytest.raises(InvalidParameter, match="bands, H, W"):
        predict(img[0], ["B02"], "ukis-csmask-4b-l2a")
    with pytest.raises(InvalidParameter, match="float reflectance"):
        predict(img.astype(np.uint16), ["B02", "B03", "B04", "B08"], "ukis-csmask-4b-l2a")
    with pytest.raises(InvalidParameter, match="3 band name"):
        predict(img, ["B02", "B03", "B04"], "ukis-csmask-4b-l2a")
    with pytest.raises(UnknownModel, match="Unknown model 'nope'.*ukis-csmask-6b-l2a"):
        predict(img, ["B02", "B03", "B04", "B08"], "nope")
    result = predict(img, ["B02", "B03", "B04", "B08"], "ukis-csmask-4b-l2a")  # all nodata
    assert not result.valid.any() and not result.cloud_prob.any()


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def pointwise_model(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """A 1×1 convolution (N, C, H, W) → (N, K, H, W) with dynamic batch and spatial dims."""
    k, c = weights.shape
    w = helper.make_tensor("w", TensorProto.FLOAT, [k, c, 1, 1], weights.astype(np.float32).ravel().tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [k], bias.astype(np.float32).tolist())
    node = helper.make_node("Conv", ["input", "w", "b"], ["output"])
    graph = helper.make_graph(
        [node], "pointwise",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", k, "H", "W"])],
        initializer=[w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_farmvibes_convention_models_selected_by_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("S2CORE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("S2CORE_PRECISION", "fp32")  # the conventions' arithmetic, compared to 1e-4
    rng = np.random.default_rng(1)
    wc, bc = rng.normal(0, 1e-3, (2, 12)), rng.normal(0, 0.1, 2)
    ws, bs = rng.normal(0, 1.0, (1, 12)), rng.normal(0, 0.1, 1)
    _save(pointwise_model(wc, bc), tmp_path / "cloud_model_test.onnx")
    shadow_path = _save(pointwise_model(ws, bs), tmp_path / "shadow_model_test.onnx")
    refl = rng.uniform(0.01, 0.5, (12, 40, 50)).astype(np.float32)
    out = predict(refl, list(FARMVIBES_BANDS), "cloud_model_test.onnx")  # by file name, in models/
    dn = refl.astype(np.float64) * 10000  # cloud convention: raw DN
    logits = np.einsum("kc,chw->khw", wc, dn) + bc[:, None, None]
    expected = np.exp(logits[1]) / np.exp(logits).sum(axis=0)
    assert np.abs(out.cloud_prob - expected).max() < 1e-4
    card = get_card(str(shadow_path), "shadow")  # by path, as shadow model: DN × 1e-4, sigmoid
    assert card.convention == "farmvibes-shadow"
    from s2core.masks.predict import run_on_array

    probs, _ = run_on_array(get_session(card), refl, list(FARMVIBES_BANDS), np.ones((40, 50), bool), ("shadow",))
    z = np.einsum("kc,chw->khw", ws, dn * 1e-4)[0] + bs[0]
    assert np.abs(probs[0] - 1 / (1 + np.exp(-z))).max() < 1e-4
    clear_sessions()
    monkeypatch.delenv("S2CORE_MODELS_DIR")
    with pytest.raises(UnknownModel, match="'s2cloudless' has no shadow output"):
        get_card("s2cloudless", "shadow")


def test_invalid_onnx_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("S2CORE_MODELS_DIR", str(tmp_path))
    (tmp_path / "broken.onnx").write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(InvalidModel, match=r"broken\.onnx is not a valid ONNX model"):
        predict(np.ones((12, 8, 8), np.float32) * 0.1, list(FARMVIBES_BANDS), "broken.onnx")
    _save(pointwise_model(np.ones((2, 4)), np.zeros(2)), tmp_path / "four.onnx")  # 4 channels, convention says 12
    with pytest.raises(InvalidModel, match=r"four\.onnx takes 4 input channels.*12 bands"):
        predict(np.ones((12, 8, 8), np.float32) * 0.1, list(FARMVIBES_BANDS), "four.onnx")
    clear_sessions()


def test_package_models_load_without_files_in_the_repo():
    data = model_bytes(get_card("ukis-csmask-4b-l2a"))
    assert onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim[1].dim_value == 4
    assert not list(ROOT.joinpath("models").glob("ukis*.onnx"))
