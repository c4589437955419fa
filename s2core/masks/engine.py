"""s2core.masks.engine: ONNX Runtime sessions and the tiled inference engine.

* Sessions are created once per (model, providers) in a process and reused across
  acquisitions (and, on Dask, across tasks of a worker): full graph optimisation,
  ``intra_op_num_threads`` = the cores this process may use, CUDA when ONNX Runtime offers
  it and CPU otherwise.
* Patch models run on overlapping patches laid out so that few patches cover the image;
  overlaps are blended with a linear ramp (no seams); patches without a valid pixel are
  skipped; patches are batched. The engine walks the image one row of patches at a time and
  hands finished rows to a sink, so memory stays bounded by one patch row whatever the image
  size (``in_memory=False`` streams the input too).
* Pixel models (s2cloudless) classify the valid pixels in chunks.

The engine works on *model input* arrays: already scaled and normalised (see
:func:`prepare_input`), float32 (C, H, W), with a boolean validity mask (H, W).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from s2core.errors import InvalidModel
from s2core.settings import cpu_count
from s2core.masks.registry import ModelCard, model_bytes

log = logging.getLogger(__name__)

#: Reads model-input rows [r0, r1): returns (x float32 (C, r1-r0, W), valid bool (r1-r0, W)).
RowReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
#: Receives finished output rows [r0, r1): probs float32 (K, r1-r0, W), NaN where nothing was predicted.
RowSink = Callable[[int, np.ndarray], None]

_SESSIONS: dict[tuple[str, str, tuple[str, ...]], "ModelSession"] = {}
_LOCK = threading.Lock()


def default_providers() -> list[str]:
    """CUDA when this ONNX Runtime build offers it, then CPU."""
    import onnxruntime as ort  # lazy: ONNX Runtime loads only when a model runs

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _dynamic_spatial(data: bytes) -> bytes:
    """Make the batch and spatial dims of a fully-convolutional model symbolic."""
    import onnx  # lazy: only to read a model file's declared input shape

    model = onnx.load_from_string(data)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for k, label in ((0, "N"), (2, "H"), (3, "W")):
                dims[k].Clear()
                dims[k].dim_param = label
    del model.graph.value_info[:]
    return model.SerializeToString()


@dataclass
class ModelSession:
    """An ONNX Runtime session for one model card, with its input/output names."""

    card: ModelCard
    session: object
    input_name: str
    output_name: str
    channels: Optional[int]
    fixed_size: Optional[int]
    providers: tuple[str, ...]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw model output for a batch."""
        return self.session.run([self.output_name], {self.input_name: x})[0]  # type: ignore[attr-defined]


_STATS = {"created": 0}


def get_session(card: ModelCard, providers: Optional[list[str]] = None) -> ModelSession:
    """The cached session of a model (created on first use)."""
    provs = tuple(providers or default_providers())
    key = (card.name, str(card.path() or card.source.resource), provs)
    with _LOCK:
        cached = _SESSIONS.get(key)
        if cached is not None:
            return cached
        sess = _create_session(card, list(provs))
        _SESSIONS[key] = sess
        _STATS["created"] += 1
        return sess


def session_stats() -> dict[str, int]:
    """How many sessions this process created and holds (one per model and providers)."""
    with _LOCK:
        return {"created": _STATS["created"], "cached": len(_SESSIONS)}


def clear_sessions() -> None:
    """Drop every cached session (tests; freeing memory)."""
    with _LOCK:
        _SESSIONS.clear()


def _create_session(card: ModelCard, providers: list[str]) -> ModelSession:
    import onnxruntime as ort  # lazy: ONNX Runtime loads only when a model runs

    data = model_bytes(card)
    where = card.path() or f"{card.source.package}/{card.source.resource}"
    try:
        if card.spatial.kind == "patch" and card.spatial.dynamic:
            data = _dynamic_spatial(data)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = cpu_count()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(data, sess_options=opts, providers=providers)
    except Exception as exc:  # onnx/onnxruntime raise many types for a bad file
        raise InvalidModel(
            f"{where} is not a valid ONNX model for {card.name!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}): replace the file or pick another model."
        ) from exc
    inp = session.get_inputs()[0]
    out_names = [o.name for o in session.get_outputs()]
    output = "probabilities" if "probabilities" in out_names else out_names[0]
    shape = list(inp.shape)
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else (
        shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None)
    if channels is not None and channels != len(card.bands):
        raise InvalidModel(
            f"{where} takes {channels} input channels but the card of {card.name!r} lists "
            f"{len(card.bands)} bands ({', '.join(card.bands)}): fix the card or the file."
        )
    fixed = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else None
    log.info("ONNX session for %s on %s", card.name, ",".join(session.get_providers()))
    return ModelSession(card, session, inp.name, output, channels, fixed, tuple(session.get_providers()))


# ---------------------------------------------------------------------------------------------
# input preparation and output decoding


def prepare_input(card: ModelCard, reflectance: np.ndarray) -> np.ndarray:
    """Turn reflectance (C, ...) in the card's band order into model input, float32, in place when possible."""
    x = np.asarray(reflectance, dtype=np.float32)
    scaling = card.input.scaling
    if scaling == "dn":
        x = x * np.float32(10000.0)
    elif scaling == "dn_1e-4":
        x = (x * np.float32(10000.0)) * np.float32(1e-4)
    if card.input.mean is not None and card.input.std is not None:
        mean = np.asarray(card.input.mean, dtype=np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
        std = np.asarray(card.input.std, dtype=np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
        x = (x - mean) / std
    return x


def decode_output(card: ModelCard, raw: np.ndarray, roles: tuple[str, ...]) -> np.ndarray:
    """Model output (N, K, ...) → probabilities (N, len(roles), ...) for the requested roles."""
    kind = card.output.kind
    if kind == "softmax":
        z = raw - raw.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        probs = z
    elif kind == "sigmoid":
        probs = 1.0 / (1.0 + np.exp(-raw))
    else:
        probs = raw
    idx = [getattr(card.output, r) for r in roles]
    return probs[:, idx].astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# patch layout and blending


def patch_starts(length: int, patch: int, overlap: int) -> list[int]:
    """Start offsets of patches covering ``[0, length)`` with at least ``overlap`` px of overlap.

    Few patches: ``ceil((length - overlap) / (patch - overlap))``, spread evenly, the last one
    flush with the end (no padding except when the image is smaller than one patch).
    """
    if length <= patch:
        return [0]
    n = math.ceil((length - overlap) / (patch - overlap))
    n = max(n, 2)
    return [round(i * (length - patch) / (n - 1)) for i in range(n)]


def ramp(size: int, lead: int, trail: int) -> np.ndarray:
    """1-D blending weights: a linear ramp over ``lead`` px at the start and ``trail`` at the end."""
    w = np.ones(size, dtype=np.float32)
    if lead > 0:
        w[:lead] = (np.arange(lead, dtype=np.float32) + 0.5) / lead
    if trail > 0:
        w[size - trail:] = np.minimum(w[size - trail:], ((np.arange(trail, dtype=np.float32) + 0.5) / trail)[::-1])
    return w


def _axis_weights(starts: list[int], patch: int, length: int) -> list[np.ndarray]:
    out = []
    for i, s in enumerate(starts):
        size = min(patch, length - s)
        lead = (starts[i - 1] + patch - s) if i > 0 else 0
        trail = (s + patch - starts[i + 1]) if i + 1 < len(starts) else 0
        out.append(ramp(size, max(0, min(lead, size)), max(0, min(trail, size))))
    return out


def choose_patch(card: ModelCard, session: ModelSession, height: int, width: int, patch: Optional[int]) -> int:
    """The patch size: the file's fixed size, else ``patch`` or the card's (the size the model was
    trained on: models with squeeze-excitation blocks pool over the whole patch, so other sizes
    change their answers), shrunk to the image for dynamic models smaller than one patch."""
    if session.fixed_size:
        return session.fixed_size
    size = patch or card.spatial.patch_size
    m = card.spatial.multiple_of
    longest = max(height, width)
    if card.spatial.dynamic and longest < size:  # one patch covers the image: shrink it (rounded up to m)
        size = max(m, math.ceil(longest / m) * m)
    return int(math.ceil(size / m) * m)


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if (x.shape[-2] > ph and x.shape[-1] > pw) else "edge"
    return np.pad(x, ((0, 0), (0, ph), (0, pw)), mode=mode)


@dataclass
class EngineStats:
    """What the engine did, for logs and benchmarks."""

    patches: int = 0
    skipped: int = 0
    pixels_run: int = 0


@dataclass
class EngineJob:
    """One model over one image: where rows come from, how big, which roles, where results go."""

    session: ModelSession
    read_rows: RowReader
    height: int
    width: int
    roles: tuple[str, ...]
    sink: RowSink


@dataclass
class EngineOptions:
    """Engine settings; ``patch``, ``overlap`` and ``batch_size`` apply to patch models only."""

    patch: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: int = 1
    cancel: Optional[Callable[[], None]] = None
    on_row: Optional[Callable[[int, int], None]] = None


def run_patches(job: EngineJob, opts: EngineOptions) -> EngineStats:
    """Run a patch model over an image of ``height`` × ``width``, one row of patches at a time."""
    session, height, width = job.session, job.height, job.width
    card = session.card
    size = choose_patch(card, session, height, width, opts.patch)
    ov = card.spatial.overlap if opts.overlap is None else opts.overlap
    ov = min(ov, size // 2)
    ys, xs = patch_starts(height, size, ov), patch_starts(width, size, ov)
    wy, wx = _axis_weights(ys, size, height), _axis_weights(xs, size, width)
    stats = EngineStats()
    acc_top = 0
    acc = np.zeros((len(job.roles), min(size, height), width), dtype=np.float32)
    wsum = np.zeros((min(size, height), width), dtype=np.float32)
    for row, y0 in enumerate(ys):
        if opts.cancel:
            opts.cancel()
        y1 = min(y0 + size, height)
        x_rows, valid_rows = job.read_rows(y0, y1)
        jobs: list[tuple[int, np.ndarray]] = []
        for col, x0 in enumerate(xs):
            x1 = min(x0 + size, width)
            if not valid_rows[:, x0:x1].any():
                stats.skipped += 1
                continue
            jobs.append((col, _pad_to(x_rows[:, :, x0:x1], size, size)))
        for b in range(0, len(jobs), opts.batch_size):
            chunk = jobs[b:b + opts.batch_size]
            raw = session.run(np.stack([j[1] for j in chunk]))
            probs = decode_output(card, raw, job.roles)
            for (col, _), p in zip(chunk, probs):
                x0 = xs[col]
                x1 = min(x0 + size, width)
                w2 = wy[row][:, None] * wx[col][None, :]
                r0 = y0 - acc_top
                acc[:, r0:r0 + (y1 - y0), x0:x1] += p[:, : y1 - y0, : x1 - x0] * w2
                wsum[r0:r0 + (y1 - y0), x0:x1] += w2
            stats.patches += len(chunk)
            stats.pixels_run += len(chunk) * size * size
        done_to = ys[row + 1] if row + 1 < len(ys) else height
        n_done = done_to - acc_top
        with np.errstate(invalid="ignore", divide="ignore"):
            out = acc[:, :n_done] / wsum[:n_done]
        out[:, ~valid_rows[:n_done]] = np.nan  # acc_top == y0, so these are rows [y0, done_to)
        job.sink(acc_top, out)
        # shift the accumulator in place so that it starts at the next row of patches
        keep = acc.shape[1] - n_done
        acc[:, :keep] = acc[:, n_done:]
        acc[:, keep:] = 0.0
        wsum[:keep] = wsum[n_done:]
        wsum[keep:] = 0.0
        acc_top = done_to
        if opts.on_row:
            opts.on_row(row + 1, len(ys))
    return stats


def run_pixels(job: EngineJob, opts: EngineOptions, rows_per_chunk: Optional[int] = None) -> EngineStats:
    """Run a pixel model over the valid pixels, a strip of about a million pixels at a time."""
    step = rows_per_chunk or max(1, 1_000_000 // max(1, job.width))
    stats = EngineStats()
    starts = list(range(0, job.height, step))
    for i, r0 in enumerate(starts):
        if opts.cancel:
            opts.cancel()
        r1 = min(job.height, r0 + step)
        x, valid = job.read_rows(r0, r1)
        out = np.full((len(job.roles), r1 - r0, job.width), np.nan, dtype=np.float32)
        if valid.any():
            pixels = np.ascontiguousarray(x[:, valid].T)
            raw = job.session.run(pixels)
            probs = decode_output(job.session.card, raw, job.roles)  # (n, k)
            out[:, valid] = probs.T
            stats.pixels_run += pixels.shape[0]
        stats.patches += 1
        job.sink(r0, out)
        if opts.on_row:
            opts.on_row(i + 1, len(starts))
    return stats


def run_model(job: EngineJob, opts: EngineOptions = EngineOptions()) -> EngineStats:
    """Run ``job`` with the patch or the pixel engine, as the model card says."""
    if job.session.card.spatial.kind == "pixel":
        return run_pixels(job, opts)
    return run_patches(job, opts)
