"""Inference engines: OpenVINO (the CPU default when installed) against ONNX Runtime on real pixels, the
automatic choice, the fallback to ONNX Runtime, and a bad engine setting."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from s2core import predict
from s2core.errors import InvalidParameter, InvalidSetting
from s2core.masks.engine import clear_sessions, openvino_available
from tests.masks.test_models_registry import SIX, _save, needs_rkh, rkh_six_bands

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (it is optional)")


def classes(pred) -> np.ndarray:  # noqa: ANN001
    return np.argmax(np.stack([1 - pred.cloud_prob - pred.shadow_prob, pred.cloud_prob, pred.shadow_prob]), 0)


@needs_rkh
@needs_openvino
def test_openvino_matches_onnxruntime_on_real_pixels(monkeypatch: pytest.MonkeyPatch):
    image = rkh_six_bands(549)  # 29RKH at 200 m: 9 patches of 256²
    ort = predict(image, SIX, "ukis-csmask-6b-l2a", engine="onnxruntime")
    assert ort.stats[0].engine.startswith("onnxruntime")
    monkeypatch.setenv("S2CORE_PRECISION", "fp32")
    ov32 = predict(image, SIX, "ukis-csmask-6b-l2a", engine="openvino")
    assert ov32.stats[0].engine == "openvino fp32" and ov32.stats[0].patches == ort.stats[0].patches
    assert np.abs(ov32.cloud_prob - ort.cloud_prob).max() < 1e-3
    assert np.abs(ov32.shadow_prob - ort.shadow_prob).max() < 1e-3
    monkeypatch.setenv("S2CORE_PRECISION", "bf16")
    ov16 = predict(image, SIX, "ukis-csmask-6b-l2a", engine="openvino")
    assert ov16.stats[0].engine == "openvino bf16"
    agreement = float((classes(ov16) == classes(ort)).mean())
    assert agreement >= 0.99, agreement  # bf16 moves probabilities a little, classes hardly
    assert 0 < np.abs(ov16.cloud_prob - ort.cloud_prob).max() < 0.2
    # the same engine twice gives the same answer, whatever the streams did in between
    again = predict(image, SIX, "ukis-csmask-6b-l2a", engine="openvino")
    assert np.array_equal(again.cloud_prob, ov16.cloud_prob)


@needs_openvino
def test_auto_engine_picks_openvino_for_patch_models_and_onnxruntime_for_trees(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("S2CORE_ENGINE", raising=False)
    image = np.full((6, 64, 64), 0.05, dtype=np.float32)
    assert predict(image, SIX, "ukis-csmask-6b-l2a").stats[0].engine.startswith("openvino")
    thirteen = np.full((13, 8, 8), 0.05, dtype=np.float32)
    all13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    assert predict(thirteen, all13, "s2cloudless").stats[0].engine.startswith("onnxruntime")
    monkeypatch.setenv("S2CORE_ENGINE", "onnxruntime")
    assert predict(image, SIX, "ukis-csmask-6b-l2a").stats[0].engine.startswith("onnxruntime")


def _inverse_model(path: Path) -> Path:
    """A 12-band patch model that ONNX Runtime runs and OpenVINO cannot compile (com.microsoft.Inverse)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 12, 1, 1], [1e-5] * 24)
    nodes = [helper.make_node("Conv", ["input", "w"], ["z"]),
             helper.make_node("Inverse", ["z"], ["zi"], domain="com.microsoft"),
             helper.make_node("Inverse", ["zi"], ["output"], domain="com.microsoft")]
    graph = helper.make_graph(nodes, "inverse", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["N", 12, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2, "H", "W"])],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=9)
    return _save(model, path)


@needs_openvino
def test_auto_falls_back_to_onnxruntime_when_openvino_cannot_compile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    from s2core.masks.registry import FARMVIBES_BANDS

    monkeypatch.setenv("S2CORE_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("S2CORE_ENGINE", raising=False)
    _inverse_model(tmp_path / "cloud_model_inverse.onnx")
    image = np.random.default_rng(0).uniform(0.01, 0.3, (12, 64, 64)).astype(np.float32)
    try:
        with caplog.at_level(logging.WARNING, logger="s2core.masks.engine"):
            out = predict(image, list(FARMVIBES_BANDS), "cloud_model_inverse.onnx")
        assert out.stats[0].engine.startswith("onnxruntime")
        assert "OpenVINO cannot compile cloud_model_inverse.onnx" in caplog.text
        assert np.isfinite(out.cloud_prob).all()
        from s2core.errors import InvalidModel

        with pytest.raises(InvalidModel, match="not a valid ONNX model"):  # asked for by name: no fallback
            predict(image, list(FARMVIBES_BANDS), "cloud_model_inverse.onnx", engine="openvino")
    finally:
        clear_sessions()


def test_bad_engine_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch):
    image = np.full((6, 32, 32), 0.05, dtype=np.float32)
    monkeypatch.setenv("S2CORE_ENGINE", "tensorrt")
    with pytest.raises(InvalidSetting, match="S2CORE_ENGINE='tensorrt'"):
        predict(image, SIX, "ukis-csmask-6b-l2a")
    monkeypatch.delenv("S2CORE_ENGINE")
    with pytest.raises(InvalidParameter, match="Unknown inference engine 'tpu'"):
        predict(image, SIX, "ukis-csmask-6b-l2a", engine="tpu")
