"""The tiled inference engine (layout, blending, nodata skipping) and the merge rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from s2core import predict
from s2core.errors import InvalidParameter
from s2core.masks.engine import clear_sessions, patch_starts, ramp
from s2core.model.classes import CLEAR, CLOUD, DEFECTIVE, NODATA, SHADOW, SNOW
from s2core.masks.merge import MergeParams, binary_mask, dilate, disk, merge_masks, remove_small_components

CONV_BANDS = ["B02", "B03", "B04", "B08"]


def conv_model(path: Path, kernel: int = 1) -> Path:
    """A (kernel × kernel) convolution 4 → 3 channels with dynamic spatial dims (a translation-equivariant model)."""
    rng = np.random.default_rng(7)
    w = rng.normal(0, 1, (3, 4, kernel, kernel)).astype(np.float32)
    b = rng.normal(0, 0.1, 3).astype(np.float32)
    node = helper.make_node("Conv", ["input", "w", "b"], ["output"], pads=[kernel // 2] * 4)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel().tolist()),
                     helper.make_tensor("b", TensorProto.FLOAT, [3], b.tolist())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    card = path.with_suffix(".yaml")
    card.write_text(
        f"name: {path.stem}\nsource: {{file: {path.name}}}\nlicence: test\nbands: [B02, B03, B04, B08]\n"
        "input: {scaling: reflectance}\nspatial: {kind: patch, patch_size: 64, dynamic: true, multiple_of: 8, overlap: 16}\n"
        "output: {kind: softmax, cloud: 1, shadow: 2}\n"
    )
    return path


def assert_no_seam(prob: np.ndarray, patch: int, overlap: int) -> None:
    """Mean |step| at every row/column of the patch overlaps (and their borders) is no spike
    compared with the rows/columns around it."""
    for axis in (0, 1):
        starts = patch_starts(prob.shape[axis], patch, overlap)
        jumps = np.abs(np.diff(prob, axis=axis)).mean(axis=1 - axis)
        zones = [range(nxt - 1, prev + patch) for prev, nxt in zip(starts, starts[1:])]
        for b in (b for zone in zones for b in zone if b < len(jumps)):
            around = np.r_[jumps[max(0, b - 6):max(0, b - 2)], jumps[b + 3:b + 7]]
            assert jumps[b] < 2.5 * around.mean() + 1e-4, (axis, b, jumps[b], around.mean())


@pytest.fixture()
def conv_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("S2CORE_MODELS_DIR", str(tmp_path))
    conv_model(tmp_path / "pointwise.onnx", 1)
    conv_model(tmp_path / "conv3.onnx", 3)
    yield tmp_path
    clear_sessions()


def test_patch_layout_covers_with_few_patches():
    for length in (1, 63, 64, 65, 200, 1000, 10980):
        starts = patch_starts(length, 64, 16)
        assert starts[0] == 0 and min(length, starts[-1] + 64) == length
        assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:]))  # overlap >= 16 everywhere
        assert len(starts) == max(1, -(-(length - 16) // 48)) if length > 64 else len(starts) == 1
    w = ramp(64, 16, 16)
    assert w.min() > 0 and w.max() == 1 and np.allclose(w[:16] + w[:16][::-1], 1.0)


def test_patched_prediction_equals_one_shot(conv_models: Path):
    rng = np.random.default_rng(3)
    img = rng.uniform(0.01, 0.4, (4, 150, 211)).astype(np.float32)
    one_shot = predict(img, CONV_BANDS, "pointwise", patch_size=256)
    patched = predict(img, CONV_BANDS, "pointwise", patch_size=64, overlap=16)
    assert one_shot.stats[0].patches == 1 and patched.stats[0].patches > 12
    assert np.abs(one_shot.cloud_prob - patched.cloud_prob).max() < 1e-5
    assert np.abs(one_shot.shadow_prob - patched.shadow_prob).max() < 1e-5
    # a 3x3 model: away from image borders, patches overlap more than its reach -> same answer
    one = predict(img, CONV_BANDS, "conv3", patch_size=256).cloud_prob
    many = predict(img, CONV_BANDS, "conv3", patch_size=64, overlap=16).cloud_prob
    inner = np.s_[2:-2, 2:-2]
    assert np.abs(one[inner] - many[inner]).max() < 0.02
    assert_no_seam(many, 64, 16)


def test_nodata_patches_are_skipped_and_stay_zero(conv_models: Path):
    rng = np.random.default_rng(4)
    img = rng.uniform(0.01, 0.4, (4, 128, 256)).astype(np.float32)
    img[:, :, 128:] = 0  # right half: no data (orbit edge)
    res = predict(img, CONV_BANDS, "pointwise", patch_size=64, overlap=16)
    assert res.stats[0].skipped >= 2
    assert not res.valid[:, 130:].any() and res.valid[:, :120].all()
    assert not res.cloud_prob[:, 128:].any() and res.cloud_prob[:, :128].min() > 0


# ---------------------------------------------------------------------------------------------- merge


def _pm(values: list[list[int]]) -> np.ndarray:
    return np.array(values, dtype=np.uint8)


def test_merge_truth_table_without_dilation():
    p = MergeParams(dilation=0)
    product = _pm([[CLEAR, CLEAR, CLEAR, CLOUD, SHADOW, SNOW, DEFECTIVE, NODATA]])
    cloud = np.array([[0.31, 0.30, 0.0, 0.0, 0.0, 0.0, 0.0, 0.99]], dtype=np.float32)
    shadow = np.array([[0.0, 0.0, 0.21, 0.0, 0.0, 0.0, 0.0, 0.99]], dtype=np.float32)
    merged = merge_masks(cloud, shadow, product, p)
    # > thr is cloud, == thr is not; product cloud/shadow count; snow/defective kept; nodata never cloud
    assert merged.tolist() == [[CLOUD, CLEAR, SHADOW, CLOUD, SHADOW, SNOW, DEFECTIVE, NODATA]]
    both = merge_masks(np.array([[0.9]]), np.array([[0.9]]), _pm([[CLEAR]]), p)
    assert both.tolist() == [[CLOUD]]  # cloud wins over shadow
    no_product = merge_masks(np.zeros((1, 2)), np.zeros((1, 2)), _pm([[CLOUD, SHADOW]]),
                             MergeParams(dilation=0, use_product_mask=False))
    assert no_product.tolist() == [[CLEAR, CLEAR]]
    nan = merge_masks(np.full((1, 1), np.nan), np.full((1, 1), np.nan), _pm([[CLEAR]]), p)
    assert nan.tolist() == [[CLEAR]]
    # raster has data where the product mask has none: the models decide; no data stays nodata
    edge = merge_masks(np.array([[0.9, 0.0, 0.9]]), np.zeros((1, 3)), _pm([[NODATA, NODATA, NODATA]]), p,
                       valid=np.array([[True, True, False]]))
    assert edge.tolist() == [[CLOUD, CLEAR, NODATA]]


def test_merge_thresholds_move_the_decision():
    product = np.full((1, 3), CLEAR, np.uint8)
    cloud = np.array([[0.2, 0.5, 0.8]], np.float32)
    zero = np.zeros_like(cloud)
    assert merge_masks(cloud, zero, product, MergeParams(cloud_thr=0.1, dilation=0)).tolist() == [[CLOUD] * 3]
    assert merge_masks(cloud, zero, product, MergeParams(cloud_thr=0.6, dilation=0)).tolist() == [[CLEAR, CLEAR, CLOUD]]
    assert merge_masks(zero, cloud, product, MergeParams(shadow_thr=0.4, dilation=0)).tolist() == [[CLEAR, SHADOW, SHADOW]]


def test_dilation_is_a_disk_of_radius_five_and_never_enters_nodata():
    product = np.full((31, 31), CLEAR, np.uint8)
    product[:, 25:] = NODATA
    cloud = np.zeros((31, 31), np.float32)
    cloud[15, 15] = 1.0
    merged = merge_masks(cloud, np.zeros_like(cloud), product)
    masked = merged == CLOUD
    assert masked.sum() == disk(5).sum() == 81  # skimage.morphology.disk(5) has 81 pixels
    assert masked[15, 10] and masked[15, 20] and masked[10, 15] and not masked[11, 11] and not masked[15, 21]
    shadow = np.zeros_like(cloud)
    shadow[15, 22] = 1.0
    merged = merge_masks(np.zeros_like(cloud), shadow, product)
    assert (merged[:, 25:] == NODATA).all() and (merged == SHADOW).sum() < disk(5).sum()
    ring = merge_masks(cloud, shadow, product)
    assert ring[15, 18] == CLOUD  # overlap of both dilations is cloud
    assert dilate(np.zeros((4, 4), bool), 5).sum() == 0


def test_min_area_removes_specks_and_fills_holes():
    masked = np.zeros((40, 40), bool)
    masked[2, 2] = True  # a 1-px speck
    masked[10:30, 10:30] = True
    masked[19, 19] = False  # a 1-px hole
    cleaned = remove_small_components(masked, 10)
    assert not cleaned[2, 2] and cleaned[19, 19] and cleaned[10:30, 10:30].all()
    product = np.full((40, 40), CLEAR, np.uint8)
    merged = merge_masks(masked.astype(np.float32), np.zeros((40, 40)), product, MergeParams(dilation=0, min_area=10))
    assert merged[2, 2] == CLEAR and merged[19, 19] == CLOUD


def test_binary_mask_is_the_reference_mask_with_nodata_apart():
    merged = _pm([[NODATA, CLEAR, CLOUD, SHADOW, SNOW]])
    assert binary_mask(merged).tolist() == [[255, 0, 1, 1, 0]]


def test_bad_merge_parameters():
    with pytest.raises(InvalidParameter, match="cloud_thr must be between 0 and 1"):
        MergeParams(cloud_thr=1.5)
    with pytest.raises(InvalidParameter, match="dilation"):
        MergeParams(dilation=-1)
    with pytest.raises(InvalidParameter, match="min_area"):
        MergeParams(min_area=-3)
