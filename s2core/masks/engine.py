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

import functools
import importlib.util
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np

from s2core.errors import InvalidModel, InvalidParameter
from s2core.settings import cpu_count, get_settings
from s2core.masks.registry import ModelCard, model_bytes

log = logging.getLogger(__name__)

#: Reads model-input rows [r0, r1): returns (x float32 (C, r1-r0, W), valid bool (r1-r0, W)).
RowReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
#: Receives finished output rows [r0, r1): probs float32 (K, r1-r0, W), NaN where nothing was predicted.
RowSink = Callable[[int, np.ndarray], None]

_SESSIONS: dict[tuple[str, str, str, str, tuple[str, ...]], "ModelSession"] = {}
#: OpenVINO runs this many patches at once at most (one thread each: on a CPU, two single-threaded streams
#: run the U-Nets faster than one stream on two threads).
MAX_STREAMS = 4
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


#: Returns the raw outputs of batches submitted together, waiting for them if needed.
Collect = Callable[[], list[np.ndarray]]


class Runner(Protocol):
    """One caller's use of a compiled model: batches submitted now, their outputs collected later."""

    def submit(self, batches: list[np.ndarray]) -> Collect:
        """Start the batches (ONNX Runtime: run them now) and return how to collect their outputs."""


class Backend(Protocol):
    """What a session runs on: one inference engine holding one compiled model."""

    def runner(self) -> Runner:
        """A runner for one caller (several threads may use one backend, each with its own runner)."""


class OrtBackend:
    """ONNX Runtime: one ``InferenceSession`` (thread-safe); batches run when submitted."""

    def __init__(self, session: object, input_name: str, output_name: str) -> None:
        self.session, self.input_name, self.output_name = session, input_name, output_name

    def runner(self) -> "OrtBackend":
        return self

    def submit(self, batches: list[np.ndarray]) -> Collect:
        run = self.session.run  # type: ignore[attr-defined]
        outputs = [run([self.output_name], {self.input_name: x})[0] for x in batches]
        return lambda: outputs


class OpenVinoBackend:
    """OpenVINO on the CPU: a compiled model with several single-threaded inference streams, each caller
    feeding it through its own ``AsyncInferQueue`` so that the streams work on different patches at once
    and the next row of patches starts while the last patches of a row finish."""

    def __init__(self, compiled: object, output_index: int, streams: int) -> None:
        self.compiled, self.output_index, self.streams = compiled, output_index, streams

    def runner(self) -> "OpenVinoRunner":
        return OpenVinoRunner(self)


class OpenVinoRunner:
    """An ``AsyncInferQueue`` of one caller; outputs are copied out in OpenVINO's callback."""

    def __init__(self, backend: OpenVinoBackend) -> None:
        import openvino as ov  # lazy: only when OpenVINO was chosen

        self.output_index = backend.output_index
        self.queue = ov.AsyncInferQueue(backend.compiled, backend.streams)
        self.queue.set_callback(self._done)
        self.errors: list[BaseException] = []

    def _done(self, request: object, slot: tuple[list, int, threading.Semaphore]) -> None:
        results, i, finished = slot
        try:
            results[i] = request.get_output_tensor(self.output_index).data.copy()  # type: ignore[attr-defined]
        except BaseException as exc:  # pragma: no cover - surfaced by collect
            self.errors.append(exc)
        finished.release()

    def submit(self, batches: list[np.ndarray]) -> Collect:
        results: list[Optional[np.ndarray]] = [None] * len(batches)
        finished = threading.Semaphore(0)
        for i, x in enumerate(batches):
            self.queue.start_async({0: x}, (results, i, finished))

        def collect() -> list[np.ndarray]:
            for _ in batches:
                finished.acquire()
            if self.errors:
                raise self.errors[0]
            return results  # type: ignore[return-value]

        return collect


@dataclass
class ModelSession:
    """A compiled model for one model card: the engine it runs on and its input geometry."""

    card: ModelCard
    backend: Backend
    channels: Optional[int]
    fixed_size: Optional[int]
    providers: tuple[str, ...]
    engine: str = "onnxruntime"
    precision: str = "fp32"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw model output for a batch."""
        return self.backend.runner().submit([x])()[0]

    def runner(self) -> Runner:
        """A runner for one caller: submit batches, collect their outputs later."""
        return self.backend.runner()

    @property
    def label(self) -> str:
        """``onnxruntime (CPUExecutionProvider)`` or ``openvino bf16``: for logs and manifests."""
        if self.engine == "openvino":
            return f"openvino {self.precision}"
        return f"onnxruntime ({','.join(self.providers)})"


_STATS = {"created": 0}


def get_session(card: ModelCard, providers: Optional[list[str]] = None, engine: Optional[str] = None) -> ModelSession:
    """The cached session of a model (created on first use).

    Args:
        card: the model.
        providers: ONNX Runtime providers; naming them means ONNX Runtime.
        engine: ``auto`` (default: the ``S2CORE_ENGINE`` setting), ``onnxruntime`` or ``openvino``.
            ``auto`` takes ONNX Runtime when it offers CUDA or the model is not a patch model (OpenVINO
            cannot run tree ensembles), OpenVINO when it is installed, and falls back to ONNX Runtime when
            OpenVINO cannot compile the model.
    """
    settings = get_settings()
    asked = engine or settings.engine
    if asked not in ENGINES:
        raise InvalidParameter(f"Unknown inference engine {asked!r}: use one of {', '.join(ENGINES)}.")
    provs = tuple(providers or default_providers())
    chosen = asked
    if asked == "auto":
        chosen = "onnxruntime" if (providers or "CUDAExecutionProvider" in provs or card.spatial.kind != "patch"
                                   or not openvino_available()) else "openvino"
    precision = openvino_precision(settings.precision) if chosen == "openvino" else "fp32"
    key = (card.name, str(card.path() or card.source.resource), f"{asked}:{chosen}", precision, provs)
    with _LOCK:
        cached = _SESSIONS.get(key)
        if cached is not None:
            return cached
        if chosen == "openvino":
            try:
                sess = _create_openvino(card, precision)
            except InvalidModel:
                if asked != "auto":
                    raise
                log.warning("OpenVINO cannot compile %s: running it on ONNX Runtime", card.name)
                sess = _create_session(card, list(provs))
        else:
            sess = _create_session(card, list(provs))
        _SESSIONS[key] = sess
        _STATS["created"] += 1
        return sess


#: The inference engines ``get_session`` knows (``S2CORE_ENGINE``).
ENGINES = ("auto", "onnxruntime", "openvino")


def openvino_available() -> bool:
    """Whether the OpenVINO runtime is installed (it is optional: ONNX Runtime is the fallback)."""
    return importlib.util.find_spec("openvino") is not None


def openvino_precision(setting: str) -> str:
    """``bf16`` or ``fp32``: the setting, or for ``auto`` bf16 where OpenVINO says the CPU has it."""
    return setting if setting != "auto" else _cpu_precision()


@functools.lru_cache(maxsize=1)
def _cpu_precision() -> str:
    """What the CPU computes fastest, asked of OpenVINO once per process (not once per session lookup)."""
    import openvino as ov  # lazy: only when OpenVINO was chosen

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in caps else "fp32"


def session_stats() -> dict[str, int]:
    """How many sessions this process created and holds (one per model and providers)."""
    with _LOCK:
        return {"created": _STATS["created"], "cached": len(_SESSIONS)}


def clear_sessions() -> None:
    """Drop every cached session (tests; freeing memory)."""
    with _LOCK:
        _SESSIONS.clear()


def _where(card: ModelCard) -> str:
    return str(card.path() or f"{card.source.package}/{card.source.resource}")


def _model_data(card: ModelCard) -> bytes:
    data = model_bytes(card)
    if card.spatial.kind == "patch" and card.spatial.dynamic:
        data = _dynamic_spatial(data)
    return data


def _invalid(card: ModelCard, exc: Exception) -> InvalidModel:
    return InvalidModel(
        f"{_where(card)} is not a valid ONNX model for {card.name!r} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}): replace the file or pick another model."
    )


def _check_channels(card: ModelCard, channels: Optional[int]) -> None:
    if channels is not None and channels != len(card.bands):
        raise InvalidModel(
            f"{_where(card)} takes {channels} input channels but the card of {card.name!r} lists "
            f"{len(card.bands)} bands ({', '.join(card.bands)}): fix the card or the file."
        )


def _create_session(card: ModelCard, providers: list[str]) -> ModelSession:
    import onnxruntime as ort  # lazy: ONNX Runtime loads only when a model runs

    try:
        data = _model_data(card)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = cpu_count()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(data, sess_options=opts, providers=providers)
    except Exception as exc:  # onnx/onnxruntime raise many types for a bad file
        raise _invalid(card, exc) from exc
    inp = session.get_inputs()[0]
    out_names = [o.name for o in session.get_outputs()]
    output = "probabilities" if "probabilities" in out_names else out_names[0]
    shape = list(inp.shape)
    channels = shape[1] if len(shape) in (2, 4) and isinstance(shape[1], int) else None
    _check_channels(card, channels)
    fixed = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else None
    log.info("ONNX Runtime session for %s on %s", card.name, ",".join(session.get_providers()))
    return ModelSession(card, OrtBackend(session, inp.name, output), channels, fixed,
                        tuple(session.get_providers()))


def _create_openvino(card: ModelCard, precision: str) -> ModelSession:
    import openvino as ov  # lazy: only when OpenVINO was chosen

    threads = cpu_count()
    streams = max(1, min(threads, MAX_STREAMS))
    try:
        core = ov.Core()
        model = core.read_model(model=_model_data(card), weights=b"")
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": threads,
        })
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses for what it cannot read or compile
        raise _invalid(card, exc) from exc
    shape = compiled.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    channels = dims[1] if len(dims) in (2, 4) else None
    _check_channels(card, channels)
    names = [o.get_any_name() for o in compiled.outputs]
    output = names.index("probabilities") if "probabilities" in names else 0
    fixed = dims[2] if len(dims) == 4 else None
    log.info("OpenVINO %s model for %s, %d stream(s) on %d thread(s)", precision, card.name, streams, threads)
    return ModelSession(card, OpenVinoBackend(compiled, output, streams), channels, fixed, ("CPU",),
                        engine="openvino", precision=precision)


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
    engine: str = ""
    engine_seconds: float = 0.0  # time the caller waited on the engine (submitting and collecting)


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


@dataclass
class _Layout:
    """Where the patches of an image go and how they are blended."""

    size: int
    ys: list[int]
    xs: list[int]
    wy: list[np.ndarray]
    wx: list[np.ndarray]


def _layout(job: EngineJob, opts: EngineOptions) -> _Layout:
    card = job.session.card
    size = choose_patch(card, job.session, job.height, job.width, opts.patch)
    ov = min(card.spatial.overlap if opts.overlap is None else opts.overlap, size // 2)
    ys, xs = patch_starts(job.height, size, ov), patch_starts(job.width, size, ov)
    return _Layout(size, ys, xs, _axis_weights(ys, size, job.height), _axis_weights(xs, size, job.width))


@dataclass
class _Row:
    """One row of patches in flight: its place, its validity, its patches and how to collect them."""

    index: int
    y0: int
    y1: int
    valid: np.ndarray
    chunks: list[list[int]]
    collect: Collect


class _Blender:
    """Accumulates weighted patch outputs and hands finished output rows to the sink, in order."""

    def __init__(self, job: EngineJob, lay: _Layout) -> None:
        self.job, self.lay = job, lay
        rows = min(lay.size, job.height)
        self.acc = np.zeros((len(job.roles), rows, job.width), dtype=np.float32)
        self.wsum = np.zeros((rows, job.width), dtype=np.float32)
        self.top = 0

    def add(self, row: _Row, probs_by_col: list[tuple[int, np.ndarray]]) -> None:
        lay, width = self.lay, self.job.width
        r0, n = row.y0 - self.top, row.y1 - row.y0
        for col, p in probs_by_col:
            x0 = lay.xs[col]
            x1 = min(x0 + lay.size, width)
            w2 = lay.wy[row.index][:, None] * lay.wx[col][None, :]
            self.acc[:, r0:r0 + n, x0:x1] += p[:, :n, : x1 - x0] * w2
            self.wsum[r0:r0 + n, x0:x1] += w2

    def emit(self, row: _Row) -> None:
        """Rows up to the next row of patches are final: divide, mark invalid pixels, sink, shift."""
        lay = self.lay
        done_to = lay.ys[row.index + 1] if row.index + 1 < len(lay.ys) else self.job.height
        n_done = done_to - self.top
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.acc[:, :n_done] / self.wsum[:n_done]
        out[:, ~row.valid[:n_done]] = np.nan  # self.top == row.y0, so these are rows [y0, done_to)
        self.job.sink(self.top, out)
        keep = self.acc.shape[1] - n_done  # shift in place so that the accumulator starts at the next row
        self.acc[:, :keep] = self.acc[:, n_done:]
        self.acc[:, keep:] = 0.0
        self.wsum[:keep] = self.wsum[n_done:]
        self.wsum[keep:] = 0.0
        self.top = done_to


#: Rows of patches submitted before the oldest is collected: the engine works on the next row while the
#: last patches of a row finish (and, on OpenVINO, while the caller reads the next rows).
PIPELINE_ROWS = 2


def run_patches(job: EngineJob, opts: EngineOptions) -> EngineStats:
    """Run a patch model over an image of ``height`` × ``width``, a row of patches at a time, two rows in
    flight; memory stays bounded by a few rows of patches."""
    card = job.session.card
    lay = _layout(job, opts)
    runner = job.session.runner()
    blender = _Blender(job, lay)
    stats = EngineStats()
    flight: list[_Row] = []

    def finish(row: _Row) -> None:
        t = time.perf_counter()
        outputs = row.collect()
        stats.engine_seconds += time.perf_counter() - t
        for cols, raw in zip(row.chunks, outputs):
            blender.add(row, list(zip(cols, decode_output(card, raw, job.roles))))
            stats.patches += len(cols)
            stats.pixels_run += len(cols) * lay.size * lay.size
        blender.emit(row)
        if opts.on_row:
            opts.on_row(row.index + 1, len(lay.ys))

    for index, y0 in enumerate(lay.ys):
        if opts.cancel:
            opts.cancel()
        y1 = min(y0 + lay.size, job.height)
        x_rows, valid_rows = job.read_rows(y0, y1)
        cols = [c for c, x0 in enumerate(lay.xs) if valid_rows[:, x0:x0 + lay.size].any()]
        stats.skipped += len(lay.xs) - len(cols)
        chunks = [cols[b:b + opts.batch_size] for b in range(0, len(cols), opts.batch_size)]
        batches = [np.stack([_pad_to(x_rows[:, :, lay.xs[c]:lay.xs[c] + lay.size], lay.size, lay.size)
                             for c in chunk]) for chunk in chunks]
        t = time.perf_counter()
        flight.append(_Row(index, y0, y1, valid_rows, chunks, runner.submit(batches)))
        stats.engine_seconds += time.perf_counter() - t
        if len(flight) >= PIPELINE_ROWS:
            finish(flight.pop(0))
    for row in flight:
        finish(row)
    return stats


def run_pixels(job: EngineJob, opts: EngineOptions, rows_per_chunk: Optional[int] = None) -> EngineStats:
    """Run a pixel model over the valid pixels, a strip of about a million pixels at a time."""
    step = rows_per_chunk or max(1, 1_000_000 // max(1, job.width))
    stats = EngineStats()
    runner = job.session.runner()  # one per image, not one per chunk
    starts = list(range(0, job.height, step))
    for i, r0 in enumerate(starts):
        if opts.cancel:
            opts.cancel()
        r1 = min(job.height, r0 + step)
        x, valid = job.read_rows(r0, r1)
        out = np.full((len(job.roles), r1 - r0, job.width), np.nan, dtype=np.float32)
        if valid.any():
            pixels = np.ascontiguousarray(x[:, valid].T)
            t = time.perf_counter()
            raw = runner.submit([pixels])()[0]
            stats.engine_seconds += time.perf_counter() - t
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
    run = run_pixels if job.session.card.spatial.kind == "pixel" else run_patches
    stats = run(job, opts)
    stats.engine = job.session.label
    return stats
