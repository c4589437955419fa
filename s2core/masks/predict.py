"""s2core.masks.predict: cloud and shadow probabilities for pixels you already have.

Example:
    >>> import numpy as np
    >>> from s2core import predict
    >>> image = np.full((6, 64, 64), 0.05, dtype=np.float32)   # reflectance, bands first
    >>> result = predict(image, ["B02", "B03", "B04", "B08", "B11", "B12"], "ukis-csmask-6b-l2a")
    >>> result.cloud_prob.shape, result.cloud_prob.dtype
    ((64, 64), dtype('float32'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from s2core.model.bands import normalize_band
from s2core.errors import InvalidParameter
from s2core.masks.engine import (
    EngineJob,
    EngineOptions,
    EngineStats,
    ModelSession,
    RowReader,
    get_session,
    prepare_input,
    run_model,
)
from s2core.masks.ensemble import ensemble_mean
from s2core.masks.registry import ModelCard, get_card


@dataclass
class Prediction:
    """Probabilities in [0, 1] at the input's pixel size; 0 where the input has no data."""

    cloud_prob: np.ndarray
    shadow_prob: np.ndarray
    valid: np.ndarray
    models: tuple[str, ...]
    stats: list[EngineStats] = field(default_factory=list)


def valid_pixels(image: np.ndarray) -> np.ndarray:
    """Pixels with data: finite in every band and not zero in every band."""
    finite = np.isfinite(image).all(axis=0)
    return finite & (np.nan_to_num(image) != 0).any(axis=0)


def array_reader(card: ModelCard, image: np.ndarray, index: list[int], valid: np.ndarray) -> RowReader:
    """A row reader that prepares model input from an in-memory reflectance array, strip by strip."""

    def read(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        x = prepare_input(card, image[index, r0:r1])
        v = valid[r0:r1]
        if not v.all():
            x = np.where(v[None], x, np.float32(0.0))
        return np.ascontiguousarray(x, dtype=np.float32), v

    return read


def run_on_array(
    session: ModelSession,
    image: np.ndarray,
    bands: Sequence[str],
    valid: np.ndarray,
    roles: tuple[str, ...],
    options: EngineOptions = EngineOptions(),
) -> tuple[np.ndarray, EngineStats]:
    """Probabilities (len(roles), H, W), NaN where invalid, for one model on a reflectance array."""
    card = session.card
    index = card.check_bands(tuple(bands), where="the image")
    height, width = image.shape[1:]
    out = np.full((len(roles), height, width), np.nan, dtype=np.float32)

    def sink(r0: int, probs: np.ndarray) -> None:
        out[:, r0:r0 + probs.shape[1]] = probs

    job = EngineJob(session, array_reader(card, image, index, valid), height, width, roles, sink)
    stats = run_model(job, options)
    return out, stats


def predict(
    image: np.ndarray,
    bands: Sequence[str],
    model: str | Sequence[str] = "ukis-csmask-6b-l2a",
    *,
    valid: Optional[np.ndarray] = None,
    patch_size: Optional[int] = None,
    overlap: Optional[int] = None,
    batch_size: int = 1,
    providers: Optional[list[str]] = None,
    engine: Optional[str] = None,
) -> Prediction:
    """Cloud and shadow probabilities of a reflectance image.

    Args:
        image: float32 reflectance (bands, H, W) — e.g. 0.05 for 5 % — at any pixel size;
            ``predict`` runs at that pixel size (no resampling inside).
        bands: band names in the order of ``image`` (``B02`` … or ``blue`` …).
        model: a registered model name (``python -m s2core models``), an ONNX file following the
            FarmVibes convention, or several names: their cloud probabilities are averaged
            (likewise the shadow probabilities of those that have a shadow output).
        valid: optional boolean (H, W) of pixels with data; default: finite and not all-zero.
        patch_size, overlap, batch_size: engine settings for patch models.
        providers: ONNX Runtime providers (default: CUDA when available, then CPU); naming them means
            ONNX Runtime.
        engine: ``auto`` (default: the ``S2CORE_ENGINE`` setting), ``onnxruntime`` or ``openvino``;
            OpenVINO's precision is the ``S2CORE_PRECISION`` setting (bf16 where the CPU has it).

    Returns:
        :class:`Prediction` with ``cloud_prob`` and ``shadow_prob`` float32 (H, W) in [0, 1];
        ``shadow_prob`` is all zero when no model has a shadow output.
    """
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise InvalidParameter(f"image must be (bands, H, W); got an array of shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidParameter(
            f"image must be float reflectance (e.g. DN / 10000 after the baseline offset); got {arr.dtype}."
        )
    if len(bands) != arr.shape[0]:
        raise InvalidParameter(f"{len(bands)} band name(s) given for an image with {arr.shape[0]} band(s).")
    try:
        names = tuple(normalize_band(str(b)) for b in bands)
    except KeyError as exc:
        raise InvalidParameter(f"Unknown band name {exc.args[0]!r} in bands: use B01…B12, B8A.") from None
    if valid is None:
        valid = valid_pixels(arr)
    elif valid.shape != arr.shape[1:]:
        raise InvalidParameter(f"valid has shape {valid.shape}, the image {arr.shape[1:]}.")
    models = [model] if isinstance(model, str) else list(model)
    if not models:
        raise InvalidParameter("No model given: pass a registered model name.")
    parts: dict[str, list[np.ndarray]] = {"cloud": [], "shadow": []}
    stats: list[EngineStats] = []
    settings = EngineOptions(patch=patch_size, overlap=overlap, batch_size=batch_size)
    for name in models:
        card = get_card(name, "cloud")
        session = get_session(card, providers, engine)
        roles = card.roles
        probs, st = run_on_array(session, arr, names, valid, roles, settings)
        stats.append(st)
        for role, p in zip(roles, probs):
            parts[role].append(p)
    cloud, shadow = (np.nan_to_num(_or_zeros(ensemble_mean(parts[r]), arr.shape[1:])) for r in ("cloud", "shadow"))
    cloud[~valid] = 0.0
    shadow[~valid] = 0.0
    return Prediction(np.clip(cloud, 0, 1), np.clip(shadow, 0, 1), valid, tuple(models), stats)


def _or_zeros(prob: Optional[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32) if prob is None else prob.astype(np.float32, copy=True)
