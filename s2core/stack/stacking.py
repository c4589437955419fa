"""s2core.stack.stacking: read every band of every tile of one acquisition and mosaic them on the grid.

:func:`stack_acquisition` is a pure function of (request, acquisition, grid): the same code
runs in a thread, a process or a Dask worker.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from s2core.errors import AssetReadError
from s2core.model.classes import CLEAR, NODATA, product_mask_from_scl
from s2core.model.grid import Grid
from s2core.model.scene import L1C_MASK_LAYERS, Scene, Signer, no_signing
from s2core.stack.product_mask import gml_cloud_polygons, product_mask_from_classi, product_mask_from_polygons
from s2core.progress import CancelToken
from s2core.model.radiometry import MAX_IMPLAUSIBLE_SHARE, MAX_PLAUSIBLE_REFLECTANCE, implausible_share, to_reflectance_dn
from s2core.read.reader import BlockRowCache, ReadPolicy, read_to_grid
from s2core.model.request import PreprocessRequest
from s2core.model.scene import Acquisition
from s2core.runfolder.layout import RASTER
from s2core.search.safe import read_href_bytes

log = logging.getLogger(__name__)

MSK_CLASSI, MSK_CLOUDS = L1C_MASK_LAYERS
_CLASS_LAYERS = ("SCL",)
#: Memory that concurrent reads may hold at once (float32 grids before conversion).
READ_MEMORY = 600_000_000  # one whole-tile 10 m read at a time (its JPEG2000 decoding is multi-threaded)
#: A stack up to this many bytes is read whole; a larger one is read, written and let go by strips of rows.
STACK_MEMORY = 1_000_000_000
#: Bytes of one strip of a stack read by strips (whole 512-row blocks of the output COG, at least one).
STRIP_MEMORY = 300_000_000


@dataclass
class StackResult:
    """The analysis-ready arrays of one acquisition.

    Attributes:
        data: uint16 (bands, H, W), reflectance × 10000, 0 = nodata (None once written by strips).
        scl: uint8 (H, W) Scene Classification Layer, nearest-resampled, 0 = nodata (None for L1C).
        product_mask: uint8 (H, W), codes of :mod:`s2core.model.classes`.
        valid_fraction: fraction of grid pixels with data in every band.
        seconds: wall time of the reads (and of the writes, for a stack written by strips).
    """

    data: Optional[np.ndarray]
    scl: Optional[np.ndarray]
    product_mask: np.ndarray
    valid_fraction: float
    seconds: float


@dataclass(frozen=True)
class _ReadJob:
    """One asset read: ``layer`` (a band, SCL or ``MSK_CLASSI:<plane>``) of scene ``i``."""

    layer: str
    i: int
    scene: Scene
    href: str
    plane: int = 1


def _read_jobs(request: PreprocessRequest, acquisition: Acquisition) -> list[_ReadJob]:
    """Every read of an acquisition: the bands of every scene, then their mask layers. Hrefs are resolved
    here, so a missing asset fails with MissingAsset before any read."""
    jobs = [_ReadJob(band, i, scene, scene.href(band)) for band in request.bands
            for i, scene in enumerate(acquisition.scenes)]
    for i, scene in enumerate(acquisition.scenes):
        for layer in scene.mask_layers:
            if layer == MSK_CLASSI:  # three planes: opaque clouds, cirrus, snow
                jobs += [_ReadJob(f"{layer}:{k}", i, scene, scene.href(layer), k) for k in (1, 2, 3)]
            elif layer != MSK_CLOUDS:  # the GML polygons are rasterised later, not read by GDAL
                jobs.append(_ReadJob(layer, i, scene, scene.href(layer)))
    return jobs


class _Mosaic:
    """The bands of one acquisition mosaicked as reads arrive: each read becomes uint16 DNs at once and
    enters the stack in scene priority order (the first scene with data wins a pixel)."""

    def __init__(self, request: PreprocessRequest, acquisition: Acquisition, grid: Grid) -> None:
        self.bands, self.scenes = request.bands, acquisition.scenes
        self.data = np.zeros((len(request.bands), *grid.shape), dtype=np.uint16)
        self.index = {band: b for b, band in enumerate(request.bands)}
        self.waiting: dict[str, dict[int, np.ndarray]] = {band: {} for band in request.bands}
        self.merged = {band: 0 for band in request.bands}  # scenes merged so far, per band
        self.scene_valid: dict[int, np.ndarray] = {}  # scenes without SCL: where the first band has data

    def add(self, band: str, i: int, layer: np.ndarray) -> None:
        """Convert scene ``i``'s read of ``band`` and merge what can be merged."""
        scene = self.scenes[i]
        if band == self.bands[0] and "SCL" not in scene.mask_layers:  # L1C masks need it
            self.scene_valid[i] = np.isfinite(layer) if layer.dtype.kind == "f" else layer != 0
        offset = scene.offsets.get(band, 0.0)
        if i == 0:  # the first scene of a band goes straight into the stack
            dn = to_reflectance_dn(layer, offset, out=self.data[self.index[band]])
            self.merged[band] = 1
        else:
            dn = self.waiting[band][i] = to_reflectance_dn(layer, offset)
        share = implausible_share(dn)
        if share > MAX_IMPLAUSIBLE_SHARE:  # a file that decodes but holds garbage (bit flips, wrong scaling)
            raise AssetReadError(
                f"{band} of {scene.id} is corrupt: {share:.0%} of its valid pixels have a reflectance above "
                f"{MAX_PLAUSIBLE_REFLECTANCE:g}, which is physically impossible: the file is damaged (or not "
                "Sentinel-2 reflectance); report it to the catalog or retry later."
            )
        _merge_in_order(self.data[self.index[band]], self.waiting[band], self.merged, band)

    def valid_everywhere(self) -> tuple[np.ndarray, float]:
        """Pixels without data in some band set to 0 in every band; returns (invalid pixels, valid fraction)."""
        valid = np.ones(self.data.shape[1:], dtype=bool)
        for band_data in self.data:  # band by band: a (bands, H, W) boolean would be as large as the stack
            valid &= band_data != RASTER.nodata
        valid_fraction = float(valid.mean()) if valid.size else 0.0
        invalid = np.logical_not(valid, out=valid)  # in place: whole-tile booleans are 120 MB each
        if invalid.any():
            for band_data in self.data:  # a pixel is valid in every band or in none (swath edges differ per band)
                band_data[invalid] = 0
        return invalid, valid_fraction


def _read_all(request: PreprocessRequest, grid: Grid, jobs: list[_ReadJob], mosaic: _Mosaic, *, sign: Signer,
              cancel: Optional[CancelToken], on_read: Optional[Callable[[str, int, int], None]],
              cache: Optional[BlockRowCache]) -> dict[tuple[str, int], np.ndarray]:
    """Run the reads in parallel (``request.read_workers`` threads, memory-bounded); bands go into
    ``mosaic`` as they arrive, the mask layers are returned by (layer, scene index)."""
    policy = ReadPolicy(timeout=request.dl_timeout, max_retries=request.max_retries)
    results: dict[tuple[str, int], np.ndarray] = {}
    total, done = len(jobs), 0
    # each read holds a float32 grid until it is converted: bound that to about READ_MEMORY bytes
    workers = max(1, min(request.read_workers, total, READ_MEMORY // max(1, grid.width * grid.height * 4)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s2read")
    try:
        futures: dict[Future, _ReadJob] = {}
        for job in jobs:
            if cancel is not None:
                cancel.raise_if_cancelled()
            fut = pool.submit(
                read_to_grid, job.href, grid,
                resampling=request.upsampling, downsampling=request.downsampling,
                flag_downsampling=request.flag_downsampling,
                is_class=job.layer in _CLASS_LAYERS or job.layer.startswith(MSK_CLASSI),
                sign=sign, policy=policy, label=f"{job.layer} of {job.scene.id}", band=job.plane,
                zero_is_data=job.layer.startswith(MSK_CLASSI), as_dn=job.layer in mosaic.index, cache=cache,
            )
            futures[fut] = job
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for fut in finished:
                job = futures.pop(fut)  # the future holds the float32 grid: let it go
                layer = fut.result()  # re-raises the read's error
                if job.layer in mosaic.index:
                    mosaic.add(job.layer, job.i, layer)
                else:
                    results[(job.layer, job.i)] = layer
                del layer
                done += 1
                if on_read is not None:
                    on_read(f"{job.layer} of {job.scene.id}", done, total)
            if cancel is not None and cancel.cancelled:
                for f in pending:
                    f.cancel()
                cancel.raise_if_cancelled()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


def stack_acquisition(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    *,
    sign: Signer = no_signing,
    cancel: Optional[CancelToken] = None,
    on_read: Optional[Callable[[str, int, int], None]] = None,
    cache: Optional[BlockRowCache] = None,
) -> StackResult:
    """Read ``request.bands`` and SCL of all scenes of ``acquisition`` onto ``grid`` and mosaic them.

    Bands are read in parallel (``request.read_workers`` threads). Scenes are mosaicked in
    the acquisition's priority order: the first scene with data wins a pixel. The
    processing-baseline offset of each scene is removed before mosaicking.

    ``on_read(label, done, total)`` is called after each asset read. ``cache`` is shared by the
    strips of one grid (:func:`stack_strips`).
    """
    t0 = time.monotonic()
    mosaic = _Mosaic(request, acquisition, grid)
    results = _read_all(request, grid, _read_jobs(request, acquisition), mosaic, sign=sign, cancel=cancel,
                        on_read=on_read, cache=cache)
    invalid, valid_fraction = mosaic.valid_everywhere()
    scl: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    for i, scene in enumerate(acquisition.scenes):  # first scene as it is; later ones fill its gaps
        layer = _scene_mask(scene, results, i, grid, mosaic.scene_valid.pop(i, None))
        if "SCL" in scene.mask_layers:
            scl_i = results.pop(("SCL", i))
            scl = scl_i if scl is None else np.where(scl == 0, scl_i, scl)
        if mask is None:
            mask = layer
        else:
            fill = (mask == 0) & (layer != 0)
            mask[fill] = layer[fill]
            del fill
        del layer
    assert mask is not None
    mask[invalid] = 0  # nodata in the raster is nodata in the mask, never "clear"
    return StackResult(data=mosaic.data, scl=scl, product_mask=mask, valid_fraction=valid_fraction,
                       seconds=time.monotonic() - t0)


def strips(grid: Grid, n_bands: int) -> list[tuple[int, int]]:
    """The row ranges a stack of ``n_bands`` uint16 bands on ``grid`` is read by: the whole grid when it
    fits :data:`STACK_MEMORY`, else strips of about :data:`STRIP_MEMORY` (multiples of 512 rows)."""
    row_bytes = max(1, n_bands * grid.width * 2)
    if row_bytes * grid.height <= STACK_MEMORY:
        return [(0, grid.height)]
    rows = max(512, STRIP_MEMORY // row_bytes // 512 * 512)
    return [(r0, min(grid.height, r0 + rows)) for r0 in range(0, grid.height, rows)]


def stack_strips(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    rows: list[tuple[int, int]],
    *,
    sign: Signer = no_signing,
    cancel: Optional[CancelToken] = None,
    on_read: Optional[Callable[[str, int, int], None]] = None,
) -> Iterator[tuple[int, StackResult]]:
    """:func:`stack_acquisition` of each strip ``(r0, r1)`` of ``rows`` in turn: yields ``(r0, strip)``.

    Every strip is read on its own sub-grid (:meth:`Grid.rows`); in the assets' own CRS a pixel gets
    the same value as in a whole-grid read (tests/stack/test_strips.py). ``on_read`` counts the reads of
    all strips together.
    """
    cache = BlockRowCache() if len(rows) > 1 else None

    def read_strip(k: int) -> StackResult:
        def strip_read(label: str, done: int, total: int) -> None:
            if on_read is not None:
                on_read(label, k * total + done, len(rows) * total)

        r0, r1 = rows[k]
        return stack_acquisition(request, acquisition, grid.rows(r0, r1), sign=sign, cancel=cancel,
                                 on_read=strip_read, cache=cache)

    if len(rows) == 1:
        yield rows[0][0], read_strip(0)
        return
    # the next strip is read while the caller writes this one (its writes wait on the disk, not the CPU)
    ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2strip")
    try:
        nxt = ahead.submit(read_strip, 0)
        for k in range(len(rows)):
            part = nxt.result()
            nxt = ahead.submit(read_strip, k + 1) if k + 1 < len(rows) else None
            yield rows[k][0], part
            del part
    finally:
        if nxt is not None:
            nxt.cancel()
        ahead.shutdown(wait=True)


def _scene_mask(scene: Scene, results: dict, i: int, grid: Grid, valid: Optional[np.ndarray]) -> np.ndarray:
    """The product mask codes of scene ``i`` on the grid (0 where the scene has no data)."""
    layers = scene.mask_layers
    if "SCL" in layers:
        return product_mask_from_scl(results[("SCL", i)])
    assert valid is not None  # computed for every scene without SCL
    if MSK_CLASSI in layers:
        planes = [results.pop((f"{MSK_CLASSI}:{k}", i)) for k in (1, 2, 3)]
        return product_mask_from_classi(*planes, valid=valid)
    if MSK_CLOUDS in layers:
        return product_mask_from_polygons(*_gml_polygons(scene.href(MSK_CLOUDS)), grid, valid)
    log.warning("%s has no product cloud mask: its product mask says clear everywhere it has data", scene.id)
    return np.where(valid, CLEAR, NODATA).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _gml_polygons(href: str) -> tuple[str | None, list[tuple[str, object]]]:
    """The parsed polygons of an ``MSK_CLOUDS_B00.gml``: read once, not once per strip."""

    return gml_cloud_polygons(read_href_bytes(href))


def _merge_in_order(out: np.ndarray, waiting: dict[int, np.ndarray], merged: dict[str, int], band: str) -> None:
    """Mosaic the waiting scenes of one band into ``out`` in priority order (the first scene with data
    wins a pixel); a scene that arrives early waits for the ones before it."""
    while merged[band] in waiting:
        i = merged[band]
        dn = waiting.pop(i)
        if i == 0:
            out[...] = dn
        else:
            fill = (out == 0) & (dn != 0)
            out[fill] = dn[fill]
        merged[band] = i + 1
