"""s2core.masks.stage: the masks stage of one acquisition — models, probabilities, merge, COGs.

Input is the acquisition's analysis-ready raster (uint16 reflectance × 10000, 0 = nodata) on
the output grid, either in memory (``in_memory=True``) or as the COG just written
(``in_memory=False``: read a strip of rows at a time, bounded memory). Each model runs at its
inference resolution — by default its native one (about 30 m for the U-Nets), rounded to an
integer multiple ``f`` of the output pixel size: the input is averaged over f × f blocks of
valid pixels, and the probabilities are resampled back to the output grid (bilinear). Both
paths read the same values through the same function, so they give identical masks.

Outputs per acquisition: ``cloud_prob.tif`` and ``shadow_prob.tif`` (uint8, probability × 250,
255 = nodata, GDAL scale 0.004) and ``mask.tif`` (classes of :mod:`s2core.masks.merge`); optionally
``cloud_mask.tif`` (the reference's binary mask).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import cv2
import numpy as np
import rasterio
from rasterio.windows import Window

from s2core.model.grid import Grid
from s2core.masks.engine import EngineJob, EngineOptions, EngineStats, RowReader, get_session, prepare_input, run_model
from s2core.model.classes import MASK_CLASSES, class_fractions
from s2core.masks.ensemble import ensemble_mean
from s2core.masks.merge import MergeParams, binary_mask, merge_flags
from s2core.runfolder.layout import CLOUD_MASK, CLOUD_PROB, MASK, PROB_NODATA, PROB_SCALE, SHADOW_PROB, raster_valid
from s2core.write.cog import STRIP_ROWS, cog_strip_writer, write_cog
from s2core.masks.registry import ModelCard, decision_for, get_card
from s2core.masks.shadow_check import shadow_check
from s2core.model.decision import Decision
from s2core.model.scene import ViewAngles
from s2core.stack.context import CloudContext
from s2core.model.request import MaskOptions

log = logging.getLogger(__name__)

#: GDAL block cache for the masks stage: strips are read once, so a large cache only costs memory.
GDAL_CACHE_BYTES = 256 * 1024 * 1024


class RasterSource(Protocol):
    """Rows of the analysis-ready raster: uint16 (bands, r1 - r0, W)."""

    height: int
    width: int

    def rows(self, r0: int, r1: int, bands: list[int]) -> np.ndarray: ...


@dataclass
class ArraySource:
    """The raster held in memory."""

    data: np.ndarray

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        return int(self.data.shape[2])

    def rows(self, r0: int, r1: int, bands: list[int]) -> np.ndarray:
        return self.data[bands, r0:r1]


@dataclass
class FileSource:
    """The raster read from its COG, a window of rows at a time (full-resolution pixels only)."""

    path: Path
    _ds: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._ds = rasterio.open(self.path, OVERVIEW_LEVEL="NONE")

    @property
    def height(self) -> int:
        return int(self._ds.height)  # type: ignore[attr-defined]

    @property
    def width(self) -> int:
        return int(self._ds.width)  # type: ignore[attr-defined]

    def rows(self, r0: int, r1: int, bands: list[int]) -> np.ndarray:
        return self._ds.read([b + 1 for b in bands], window=Window(0, r0, self.width, r1 - r0))  # type: ignore[attr-defined]

    def close(self) -> None:
        self._ds.close()  # type: ignore[attr-defined]


def _block_sum(a: np.ndarray, factor: int, dtype: type) -> np.ndarray:
    """Sums over ``factor`` × ``factor`` blocks of the last two axes (whole blocks), in ``dtype``."""
    rows = a[..., 0::factor, :].astype(dtype)
    for k in range(1, factor):
        rows += a[..., k::factor, :]
    out = rows[..., 0::factor].copy()
    for k in range(1, factor):
        out += rows[..., k::factor]
    return out


def block_mean(dn: np.ndarray | Sequence[np.ndarray], factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Average uint16 DN (B, h, W) over ``factor`` × ``factor`` blocks of valid pixels, to the nearest DN.

    Returns the mean DN, uint16 (B, ceil(h/f), ceil(W/f)) (0 where a block has no valid pixel; the
    rounding, half a DN = 0.00005 reflectance, is below the data's own quantum, as SNAP's mean
    downsampling of integer rasters), and the blocks with any valid pixel. A pixel is valid when
    every band is non-zero (the stacking writes all bands or none). Sums are exact integers; blocks
    past the edge use the pixels they have. ``dn`` may be a sequence of (h, W) bands (views of a
    larger stack): they are taken one at a time, so that no copy of all of them is made.
    """
    bands = list(dn)
    valid = bands[0] != 0
    for band in bands[1:]:
        valid &= band != 0
    if factor == 1:
        return (dn if isinstance(dn, np.ndarray) else np.stack(bands)), valid
    h, w = valid.shape
    pad = ((0, (-h) % factor), (0, (-w) % factor))

    def padded(a: np.ndarray) -> np.ndarray:  # blocks past the edge: zeros, which count as no data
        return np.pad(a, pad) if pad[0][1] or pad[1][1] else a

    every = bool(valid.all())
    count = _block_sum(padded(valid).view(np.uint8), factor, np.uint32)
    half, denominator = count // 2, np.maximum(count, 1)
    out = np.empty((len(bands), *count.shape), dtype=np.uint16)
    for i, band in enumerate(bands):
        if not every:
            band = np.where(valid, band, 0)  # a pixel missing in one band counts in none
        total = _block_sum(padded(band), factor, np.uint32)
        total += half
        total //= denominator
        out[i] = total
    return out, count > 0


def reflectance(mean_dn: np.ndarray) -> np.ndarray:
    """uint16 DN (reflectance × 10000) → float32 reflectance."""
    return mean_dn.astype(np.float32) * np.float32(1e-4)


#: A model whose input pixels are more than this many times its native resolution is outside the scale it
#: was trained for (said in the manifest, the CLI and the app).
COARSE_INPUT_RATIO = 2.0


def _source_pixel(card: ModelCard, source_resolution: Optional[Mapping[str, float]]) -> float:
    """The coarsest source pixel (m) among the bands the model reads (0 when unknown)."""
    return max((source_resolution or {}).get(b, 0.0) for b in card.bands)


def inference_resolution(card: ModelCard, resolution: Optional[float],
                         source_resolution: Optional[Mapping[str, float]] = None) -> float:
    """The resolution (m) a model runs at: ``resolution`` when given, else the coarser of its native
    resolution and the source pixels of the bands it reads (upsampled pixels hold no more detail)."""
    if resolution:
        return float(resolution)
    return max(card.native_resolution, _source_pixel(card, source_resolution))


def coarse_input_warning(card: ModelCard, source_resolution: Optional[Mapping[str, float]]) -> Optional[str]:
    """A warning when the model's bands come from pixels more than :data:`COARSE_INPUT_RATIO` × its native
    resolution (e.g. 120 m tiles through the 30 m U-Nets), else None."""
    source = _source_pixel(card, source_resolution)
    if source > COARSE_INPUT_RATIO * card.native_resolution:
        return (f"{card.name} was trained on {card.native_resolution:g} m pixels but its bands come from "
                f"{source:g} m pixels ({source / card.native_resolution:.0f}x coarser): its cloud and shadow "
                "masks are outside the scale it was trained for and less reliable; use full-resolution data for "
                "trustworthy masks.")
    return None


def inference_factor(card: ModelCard, grid: Grid, resolution: Optional[float],
                     source_resolution: Optional[Mapping[str, float]] = None) -> int:
    """Integer block size between the output grid and the model's inference resolution."""
    target = inference_resolution(card, resolution, source_resolution)
    return max(1, int(round(target / grid.resolution_m)))


def source_reader(card: ModelCard, source: RasterSource, band_index: list[int], factor: int) -> RowReader:
    """Model input rows at the inference resolution, from a raster source."""

    def read(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        s0, s1 = r0 * factor, min(source.height, r1 * factor)
        mean_dn, valid = block_mean(source.rows(s0, s1, band_index), factor)
        x = prepare_input(card, reflectance(mean_dn))
        if not valid.all():
            x = np.where(valid[None], x, np.float32(0.0))
        return np.ascontiguousarray(x, dtype=np.float32), valid

    return read


@dataclass
class ModelRun:
    """Probabilities of one model at its inference grid."""

    card: ModelCard
    roles: tuple[str, ...]
    factor: int
    probs: np.ndarray  # (len(roles), Hi, Wi) float32, NaN = nodata
    stats: EngineStats
    warning: Optional[str] = None


@dataclass(frozen=True)
class ModelPlan:
    """One model of the masks stage: the roles it serves, the raster bands it reads, its block size."""

    name: str
    card: ModelCard
    roles: tuple[str, ...]
    index: tuple[int, ...]
    factor: int


def plan_models(options: MaskOptions, bands: tuple[str, ...], grid: Grid,
                source_resolution: Optional[Mapping[str, float]] = None) -> list[ModelPlan]:
    """Every model named in ``options`` once (a model serving both roles runs once), each at its
    :func:`inference_resolution` (``source_resolution``: band -> metres of the source pixels)."""
    wanted: dict[str, set[str]] = {}
    for name in options.cloud_model:
        wanted.setdefault(name, set()).add("cloud")
    wanted.setdefault(options.shadow_model, set()).add("shadow")
    plans = []
    for name, roles_set in wanted.items():
        card = get_card(name, "cloud" if "cloud" in roles_set else "shadow")
        roles = tuple(r for r in ("cloud", "shadow") if r in roles_set)
        factor = inference_factor(card, grid, options.inference_resolution, source_resolution)
        plans.append(ModelPlan(name, card, roles, tuple(card.check_bands(bands)), factor))
    return plans


@dataclass
class ModelInput:
    """A model's input at its inference grid, gathered before the stage runs: the block means as uint16
    DN (C, Hi, Wi) (:func:`block_mean`) and the blocks with data (Hi, Wi)."""

    mean_dn: np.ndarray
    valid: np.ndarray


def _input_reader(card: ModelCard, given: ModelInput) -> RowReader:
    def read(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        valid = given.valid[r0:r1]
        x = prepare_input(card, reflectance(given.mean_dn[:, r0:r1]))
        if not valid.all():
            x = np.where(valid[None], x, np.float32(0.0))
        return np.ascontiguousarray(x, dtype=np.float32), valid

    return read


#: The strip feed gathers a model's input only when it takes at most this many bytes (the U-Nets at
#: 30 m from a 10 m tile: 0.16 GB); larger inputs (a 10 m model on a whole tile) are read back by strips.
FEED_MAX_BYTES = 1_000_000_000


class StripFeed:
    """The masks stage's inputs gathered from the strips of the raster as they are written (so that the
    stage reads nothing back): each planned model's block means at its inference grid, and the
    pixels with data. Block sums are exact integers, so the inputs equal what the stage would read
    from the raster itself, whatever the strips' heights."""

    def __init__(self, plans: list[ModelPlan], grid: Grid) -> None:
        self._valid_bits = np.zeros((grid.height, (grid.width + 7) // 8), dtype=np.uint8)  # 1/8 of a bool grid
        self.width = grid.width
        self.inputs: dict[str, ModelInput] = {}
        self.plans = plans
        self._plans = []
        for plan in plans:
            hi, wi = math.ceil(grid.height / plan.factor), math.ceil(grid.width / plan.factor)
            if len(plan.index) * hi * wi * 2 <= FEED_MAX_BYTES:
                self.inputs[plan.name] = ModelInput(np.zeros((len(plan.index), hi, wi), dtype=np.uint16),
                                                    np.zeros((hi, wi), dtype=bool))
                self._plans.append(plan)
        self._carry: dict[str, tuple[int, np.ndarray]] = {}  # rows not yet a whole block: (first row, DN)
        self.height = grid.height

    @property
    def complete(self) -> bool:
        """Whether every planned model's input is gathered (else some are read back from the raster)."""
        return all(plan.name in self.inputs for plan in self.plans)

    @property
    def valid(self) -> np.ndarray:
        """Pixels with data (bool (H, W)), from the strips seen."""
        return np.unpackbits(self._valid_bits, axis=1, count=self.width).view(bool)

    def add(self, r0: int, data: np.ndarray) -> None:
        """The next strip of the raster as written: uint16 DN (bands, rows, W) starting at row ``r0``.

        The model's bands are taken as views of the strip, one at a time: no copy of the strip is made
        (only rows that do not yet fill a block are kept for the next strip)."""
        self._valid_bits[r0:r0 + data.shape[1]] = np.packbits(raster_valid(data), axis=1)
        if r0 + data.shape[1] >= self.height:
            # the last strip: the models' sessions are made (OpenVINO compiles for this CPU, about 1 s) while
            # the raster's COG is written, when the strips' memory is free again
            threading.Thread(target=_warm_sessions, args=([p.card for p in self.plans],), name="s2warm",
                             daemon=True).start()
        for plan in self._plans:
            bands = [data[i] for i in plan.index]
            first = r0
            if plan.name in self._carry:  # complete the block row that the last strip began
                first, waiting = self._carry.pop(plan.name)
                need = min(plan.factor - waiting.shape[1], data.shape[1])
                self._take(plan, first, [np.concatenate([w, b[:need]]) for w, b in zip(waiting, bands)])
                bands, first = [b[need:] for b in bands], r0 + need
            self._take(plan, first, bands)

    def _take(self, plan: ModelPlan, first: int, bands: list[np.ndarray]) -> None:
        """Block means of rows ``first…`` (starting a block row); rows that do not fill a block wait."""
        n = bands[0].shape[0]
        if n == 0:
            return
        whole = n if first + n >= self.height else n // plan.factor * plan.factor
        if whole < n:
            self._carry[plan.name] = (first + whole, np.stack([b[whole:] for b in bands]))
        if whole:
            mean_dn, ok = block_mean([b[:whole] for b in bands], plan.factor)
            b0 = first // plan.factor
            given = self.inputs[plan.name]
            given.mean_dn[:, b0:b0 + mean_dn.shape[1]] = mean_dn
            given.valid[b0:b0 + ok.shape[0]] = ok


def _warm_sessions(cards: list[ModelCard]) -> None:
    """Create (and cache) the sessions of ``cards`` ahead of their use; a failure is raised again there."""
    for card in cards:
        try:
            get_session(card)
        except Exception as exc:  # noqa: BLE001 - the masks stage asks again and reports it
            log.debug("warming the session of %s failed: %s", card.name, exc)


def run_models(
    options: MaskOptions,
    source: RasterSource,
    bands: tuple[str, ...],
    grid: Grid,
    *,
    cancel: Optional[Callable[[], None]] = None,
    on_progress: Optional[Callable[[float, str], None]] = None,
    source_resolution: Optional[Mapping[str, float]] = None,
    inputs: Optional[Mapping[str, ModelInput]] = None,
) -> list[ModelRun]:
    """Run every model of :func:`plan_models` on its input: ``inputs[name]`` when given (gathered by a
    :class:`StripFeed`), else block means of ``source`` read by strips."""
    plans = plan_models(options, bands, grid, source_resolution)
    runs: list[ModelRun] = []
    for k, plan in enumerate(plans):
        card, factor = plan.card, plan.factor
        hi, wi = math.ceil(grid.height / factor), math.ceil(grid.width / factor)
        probs = np.full((len(plan.roles), hi, wi), np.nan, dtype=np.float32)

        def sink(r0: int, p: np.ndarray, probs: np.ndarray = probs) -> None:
            probs[:, r0:r0 + p.shape[1]] = p

        def on_row(done: int, total: int, k: int = k, name: str = plan.name) -> None:
            if on_progress:
                on_progress((k + done / total) / len(plans), f"{name}: {done}/{total}")

        given = (inputs or {}).get(plan.name)
        reader = _input_reader(card, given) if given is not None else source_reader(card, source, list(plan.index),
                                                                                    factor)
        job = EngineJob(get_session(card), reader, hi, wi, plan.roles, sink)
        stats = run_model(job, EngineOptions(patch=options.patch_size, batch_size=options.batch_size,
                                             cancel=cancel, on_row=on_row))
        log.info("%s at %g m on %s: %d patches, %d skipped", plan.name, grid.resolution_m * factor, stats.engine,
                 stats.patches, stats.skipped)
        warning = coarse_input_warning(card, source_resolution)
        if warning:
            log.warning("%s", warning)
        runs.append(ModelRun(card, plan.roles, factor, probs, stats, warning))
    return runs


def upsample_rows(src: np.ndarray, factor: int, r0: int, r1: int, width: int) -> np.ndarray:
    """Bilinear upsampling of ``src`` (h, w) by a whole ``factor``: output rows [r0, r1), columns [0, width).

    Pixel centres map to pixel centres (output pixel i samples source (i + 0.5) / f − 0.5), edges
    repeat the edge pixel, and NaN (no data) is left out with the weights renormalised over the pixels
    that have data (NaN where none has). Any strip of rows equals the same rows of the whole image.
    """
    h, w = src.shape
    lo = max(0, math.floor((r0 + 0.5) / factor - 0.5) - 1)  # one source row of halo on each side
    hi = min(h, math.floor((r1 - 0.5) / factor - 0.5) + 3)
    sub = src[lo:hi]
    size = (w * factor, (hi - lo) * factor)
    finite = np.isfinite(sub)
    if finite.all():
        up = cv2.resize(sub, size, interpolation=cv2.INTER_LINEAR)
    else:
        num = cv2.resize(np.where(finite, sub, np.float32(0.0)), size, interpolation=cv2.INTER_LINEAR)
        den = cv2.resize(finite.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        with np.errstate(invalid="ignore", divide="ignore"):
            up = np.where(den > 1e-6, num / den, np.float32(np.nan)).astype(np.float32, copy=False)
    return up[r0 - lo * factor:r1 - lo * factor, :width]


def _to_grid(run: ModelRun, channel: int, grid: Grid, r0: int, r1: int) -> np.ndarray:
    """One channel of a model run on output rows [r0, r1): bilinear from the inference grid."""
    src = run.probs[channel]
    if run.factor == 1:
        return src[r0:r1]
    return upsample_rows(src, run.factor, r0, r1, grid.width)


def combined_probability(runs: list[ModelRun], role: str, grid: Grid, r0: int, r1: int) -> np.ndarray:
    """Mean probability of ``role`` over the models that give it, on output rows [r0, r1)."""
    parts = [
        _to_grid(run, run.roles.index(role), grid, r0, r1) for run in runs if role in run.roles
    ]
    combined = ensemble_mean(parts)
    assert combined is not None, f"no model gives {role}"  # resolved requests always have one
    return combined


def quantize(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Probability → uint8 (× 250, 255 = nodata)."""
    x = prob * np.float32(PROB_SCALE)
    np.fmax(x, np.float32(0.0), out=x)  # fmax also turns NaN into 0
    np.minimum(x, np.float32(PROB_SCALE), out=x)
    np.rint(x, out=x)
    q = x.astype(np.uint8)
    q[~valid] = PROB_NODATA
    return q


@dataclass
class MaskResult:
    """What the masks stage wrote and measured."""

    outputs: dict[str, str]
    fractions: dict[str, float]
    models: dict[str, dict[str, object]]
    merge: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    engine_seconds: dict[str, float] = field(default_factory=dict)  # per model: waited on the engine (not recorded)


def _bounded_gdal_cache(fn: Callable[..., MaskResult]) -> Callable[..., MaskResult]:
    """Run ``fn`` with GDAL's block cache bounded to :data:`GDAL_CACHE_BYTES`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> MaskResult:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            return fn(*args, **kwargs)

    return wrapper


def merge_params(options: MaskOptions, grid: Grid, decision: Decision) -> MergeParams:
    """The merge's thresholds and morphology on ``grid`` (metres turned into its pixels)."""
    return MergeParams(decision.cloud_thr, decision.shadow_thr, options.dilation_px(grid.resolution_m),
                       options.min_area_px(grid.resolution_m), options.use_product_mask)


@_bounded_gdal_cache
def mask_acquisition(
    options: MaskOptions,
    source: RasterSource,
    product_mask: np.ndarray,
    bands: tuple[str, ...],
    grid: Grid,
    folder: Path,
    *,
    tags: Optional[dict[str, str]] = None,
    cancel: Optional[Callable[[], None]] = None,
    on_progress: Optional[Callable[[float, str], None]] = None,
    valid: Optional[np.ndarray] = None,
    angles: Optional[ViewAngles] = None,
    context: Optional[CloudContext] = None,
    source_resolution: Optional[Mapping[str, float]] = None,
    within: Optional[np.ndarray] = None,
    inputs: Optional[Mapping[str, ModelInput]] = None,
) -> MaskResult:
    """Run the models, write the probabilities and the merged mask of one acquisition.

    ``valid`` (bool (H, W): pixels where the raster has data) is read from ``source`` when not
    given; the pipeline passes the one it already has from stacking. ``angles`` (the acquisition's
    sun and view angles) and ``context`` (the product's clouds around the grid) serve the shadow check;
    ``source_resolution`` (band -> metres of its source pixels) sets each model's inference resolution;
    ``within`` (the AOI's pixels) limits the class fractions to the AOI; ``inputs`` are model inputs
    gathered while the raster was written (:class:`StripFeed`), so that nothing is read back.
    """
    runs = run_models(options, source, bands, grid, cancel=cancel, source_resolution=source_resolution,
                      inputs=inputs, on_progress=(lambda f, m: on_progress(0.9 * f, m)) if on_progress else None)
    if isinstance(inputs, dict):
        inputs.clear()  # consumed: the models ran, their inputs' memory goes back before the merge
    if cancel:
        cancel()  # before any mask output is written
    known_valid = valid is not None
    valid = valid if valid is not None else np.zeros(grid.shape, dtype=bool)
    cloud_hit = np.zeros(grid.shape, dtype=bool)
    shadow_hit = np.zeros(grid.shape, dtype=bool)
    common = dict(tags or {})
    decision = decision_for(options)
    params = merge_params(options, grid, decision)
    prob_meta = dict(nodata=PROB_NODATA, scales=[1.0 / PROB_SCALE], offsets=[0.0], predictor=2,
                     overview_resampling="average")
    with cog_strip_writer(folder / CLOUD_PROB.file, grid, 1, CLOUD_PROB.dtype, **prob_meta,
                          descriptions=["cloud probability x 250"],
                          tags={**common, "MODELS": ",".join(options.cloud_model)}) as cds, \
         cog_strip_writer(folder / SHADOW_PROB.file, grid, 1, SHADOW_PROB.dtype, **prob_meta,
                          descriptions=["shadow probability x 250"],
                          tags={**common, "MODELS": options.shadow_model}) as sds:
        for r0 in range(0, grid.height, STRIP_ROWS):
            r1 = min(grid.height, r0 + STRIP_ROWS)
            v = valid[r0:r1]
            if not known_valid:
                v[:] = raster_valid(source.rows(r0, r1, [0]))
            cloud = combined_probability(runs, "cloud", grid, r0, r1)
            shadow = combined_probability(runs, "shadow", grid, r0, r1)
            c, sh = decision.flags(cloud, shadow)
            cloud_hit[r0:r1] = c & v
            shadow_hit[r0:r1] = sh & v
            win = Window(0, r0, grid.width, r1 - r0)
            cds.write(quantize(cloud, v), 1, window=win)
            sds.write(quantize(shadow, v), 1, window=win)
        for run in runs:  # inference-grid probabilities are no longer needed
            run.probs = np.empty((0, 0, 0), dtype=np.float32)
        # the shadow check (NumPy and OpenCV, one core) runs while GDAL compresses the probabilities' COGs
        checking = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2check")
        pending = checking.submit(shadow_check, options, cloud_hit, shadow_hit, product_mask, angles, grid, context)
        checking.shutdown(wait=False)
    check = pending.result()
    merged = merge_flags(cloud_hit, shadow_hit, product_mask, params, valid, check.possible)
    del cloud_hit, shadow_hit, valid, check.possible
    classes = ";".join(f"{k}={v}" for k, v in MASK_CLASSES.items())
    merge = {"decision": decision.to_dict(), "dilation_px": params.dilation,
             "dilation_m": round(params.dilation * grid.resolution_m, 3), "min_area_px": params.min_area,
             "shadow_check": check.record}
    write_cog(folder / MASK.file, merged, grid, nodata=MASK.nodata, overview_resampling="nearest", predictor=1,
              descriptions=["merged cloud/shadow mask"],
              tags={**common, "CLASSES": classes, "DECISION": decision.describe(), "CLOUD_THR": params.cloud_thr,
                    "SHADOW_THR": params.shadow_thr, "DILATION": params.dilation, "MIN_AREA": params.min_area,
                    "SHADOW_CHECK": check.record.get("mode", "off")})
    outputs = {r.name: r.file for r in (CLOUD_PROB, SHADOW_PROB, MASK)}
    if options.binary_mask:
        write_cog(folder / CLOUD_MASK.file, binary_mask(merged), grid, nodata=CLOUD_MASK.nodata,
                  overview_resampling="nearest", predictor=1, descriptions=["cloud mask (1 cloud/shadow, 0 clear)"],
                  tags=common)
        outputs[CLOUD_MASK.name] = CLOUD_MASK.file
    models = {
        run.card.name: {"roles": list(run.roles), "inference_resolution": grid.resolution_m * run.factor,
                        "native_resolution": run.card.native_resolution,
                        "patches": run.stats.patches, "skipped_patches": run.stats.skipped,
                        "pixels_run": run.stats.pixels_run, "engine": run.stats.engine,
                        **({"warning": run.warning} if run.warning else {})}
        for run in runs
    }
    warnings = [run.warning for run in runs if run.warning] + ([check.warning] if check.warning else [])
    if on_progress:
        on_progress(1.0, "masks written")
    return MaskResult(outputs, class_fractions(merged, within), models, merge, warnings,
                      {run.card.name: run.stats.engine_seconds for run in runs})
