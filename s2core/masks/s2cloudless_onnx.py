"""s2core.masks.s2cloudless_onnx: the reproducible build of ``models/s2cloudless.onnx``.

The LightGBM model shipped in the ``s2cloudless`` package is converted with onnxmltools.
LightGBM compares float32 features against *double* thresholds (``x <= t``); ONNX Runtime's
tree ensemble stores float32 thresholds. Rounding ``t`` to the nearest float32 can move it
above ``t`` and send a feature equal to that float32 down the wrong branch. Each threshold is
therefore rounded *down* to the largest float32 ``f <= t``: for every float32 ``x``,
``x <= f`` exactly when ``x <= t``, so the ONNX model takes the same branches as LightGBM.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from s2core.errors import InvalidModel
from s2core.runfolder.atomic import tmp_path

log = logging.getLogger(__name__)

MODEL_RESOURCE = "models/pixel_s2_cloud_detector_lightGBM_v0.1.txt"
N_FEATURES = 10


def float32_floor(value: float) -> float:
    """The largest float32 that is <= ``value`` (returned as an exact Python float)."""
    f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf), dtype=np.float32)
    return float(f)


def _round_thresholds(node: dict[str, Any]) -> int:
    """Round every numeric ``<=`` threshold of a LightGBM tree dump down to float32, in place."""
    count = 0
    stack = [node]
    while stack:
        n = stack.pop()
        if "split_feature" in n:
            if n.get("decision_type") == "<=" and not isinstance(n["threshold"], str):
                n["threshold"] = float32_floor(float(n["threshold"]))
                count += 1
            stack.extend(n[k] for k in ("left_child", "right_child") if k in n)
    return count


class _RoundedBooster:
    """A Booster stand-in whose dump carries float32-exact thresholds (onnxmltools' mock path)."""

    is_mock = True

    def __init__(self, booster: Any):
        self._booster = booster
        self.params = booster.params
        self._dump = booster.dump_model()
        self.rounded = sum(_round_thresholds(t["tree_structure"]) for t in self._dump["tree_info"])

    def dump_model(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._dump

    def attr(self, key: str) -> Any:
        return self._booster.attr(key)

    def feature_name(self) -> list[str]:
        return self._booster.feature_name()


def lightgbm_model_path() -> Path:
    """The LightGBM text model inside the installed ``s2cloudless`` package."""
    try:
        return Path(str(importlib.resources.files("s2cloudless").joinpath(MODEL_RESOURCE)))
    except ModuleNotFoundError as exc:
        raise InvalidModel(
            "The s2cloudless model is built from the installed s2cloudless package, which is missing: "
            "run `pip install -r requirements.txt`."
        ) from exc


def build_s2cloudless_onnx(dest: Path) -> Path:
    """Convert the s2cloudless LightGBM model to ONNX at ``dest`` (atomically). Returns ``dest``.

    The graph takes ``input`` float32 (N, 10) — bands B01 B02 B04 B05 B08 B8A B09 B10 B11 B12
    as TOA reflectance — and returns ``label`` and ``probabilities`` (N, 2); column 1 is cloud.
    """
    import onnx  # lazy: the converter's stack, only when building the file
    from lightgbm import Booster  # lazy: the converter's stack, only when building the file
    from onnxmltools import convert_lightgbm  # lazy: the converter's stack, only when building the file
    from onnxmltools.convert.common.data_types import FloatTensorType  # lazy: the converter's stack, only when building the file
    from onnxmltools.convert.lightgbm._parse import WrappedBooster  # lazy: the converter's stack, only when building the file

    src = lightgbm_model_path()
    booster = Booster(model_file=str(src))
    rounded = _RoundedBooster(booster)
    wrapped = WrappedBooster(rounded)  # type: ignore[arg-type]
    onx = convert_lightgbm(
        wrapped, initial_types=[("input", FloatTensorType([None, N_FEATURES]))], zipmap=False,
        target_opset=15,
    )
    onx.doc_string = (
        f"s2cloudless {src.name} converted by s2core with onnxmltools; "
        f"{rounded.rounded} thresholds rounded down to float32"
    )
    onnx.checker.check_model(onx)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(dest)
    try:
        tmp.write_bytes(onx.SerializeToString())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%d thresholds rounded down to float32)", dest, rounded.rounded)
    return dest
