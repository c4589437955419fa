"""s2core.stacking: read every band of every tile of one acquisition and mosaic them on the grid.

:func:`stack_acquisition` is a pure function of (request, acquisition, grid): the same code
runs in a thread, a process or a Dask worker.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from s2core.catalog import Signer, no_signing
from s2core.grid import Grid
from s2core.masks import product_mask_from_scl
from s2core.progress import CancelToken
from s2core.radiometry import to_reflectance_dn
from s2core.reading import ReadPolicy, read_to_grid
from s2core.request import PreprocessRequest
from s2core.selection import Acquisition

log = logging.getLogger(__name__)


@dataclass
class StackResult:
    """The analysis-ready arrays of one acquisition.

    Attributes:
        data: uint16 (bands, H, W), reflectance × 10000, 0 = nodata.
        scl: uint8 (H, W) Scene Classification Layer, nearest-resampled, 0 = nodata.
        product_mask: uint8 (H, W), see :mod:`s2core.masks`.
        valid_fraction: fraction of grid pixels with data in every band.
        seconds: wall time of the reads.
    """

    data: np.ndarray
    scl: np.ndarray
    product_mask: np.ndarray
    valid_fraction: float
    seconds: float


def stack_acquisition(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    *,
    sign: Signer = no_signing,
    cancel: Optional[CancelToken] = None,
    on_read: Optional[Callable[[str, int, int], None]] = None,
) -> StackResult:
    """Read ``request.bands`` and SCL of all scenes of ``acquisition`` onto ``grid`` and mosaic them.

    Bands are read in parallel (``request.read_workers`` threads). Scenes are mosaicked in
    the acquisition's priority order: the first scene with data wins a pixel. The
    processing-baseline offset of each scene is removed before mosaicking.

    ``on_read(label, done, total)`` is called after each asset read.
    """
    t0 = time.monotonic()
    policy = ReadPolicy(timeout=request.dl_timeout, max_retries=request.max_retries)
    layers = [*request.bands, "SCL"]
    # hrefs resolved up front: a missing asset fails with MissingAsset before any read
    jobs = [(band, i, scene, scene.href(band)) for band in layers for i, scene in enumerate(acquisition.scenes)]
    results: dict[tuple[str, int], np.ndarray] = {}
    total = len(jobs)
    done = 0
    pool = ThreadPoolExecutor(max_workers=min(request.read_workers, total), thread_name_prefix="s2read")
    try:
        futures: dict[Future, tuple[str, int, str]] = {}
        for band, i, scene, href in jobs:
            if cancel is not None:
                cancel.raise_if_cancelled()
            fut = pool.submit(
                read_to_grid,
                href,
                grid,
                resampling=request.upsampling,
                downsampling=request.downsampling,
                flag_downsampling=request.flag_downsampling,
                is_class=band == "SCL",
                sign=sign,
                policy=policy,
                label=f"{band} of {scene.id}",
            )
            futures[fut] = (band, i, scene.id)
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for fut in finished:
                band, i, scene_id = futures[fut]
                results[(band, i)] = fut.result()  # re-raises the read's error
                done += 1
                if on_read is not None:
                    on_read(f"{band} of {scene_id}", done, total)
            if cancel is not None and cancel.cancelled:
                for f in pending:
                    f.cancel()
                cancel.raise_if_cancelled()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

    n_scenes = len(acquisition.scenes)
    data = np.zeros((len(request.bands), *grid.shape), dtype=np.uint16)
    for b, band in enumerate(request.bands):
        out = data[b]
        for i in range(n_scenes):
            dn = to_reflectance_dn(results.pop((band, i)), acquisition.scenes[i].offsets.get(band, 0.0))
            fill = (out == 0) & (dn != 0)
            out[fill] = dn[fill]
    scl = np.zeros(grid.shape, dtype=np.uint8)
    for i in range(n_scenes):
        layer = results.pop(("SCL", i))
        fill = (scl == 0) & (layer != 0)
        scl[fill] = layer[fill]
    valid = np.all(data != 0, axis=0)
    data[:, ~valid] = 0  # a pixel is valid in every band or in none (swath edges differ per band)
    mask = product_mask_from_scl(scl)
    mask[~valid] = 0  # nodata in the raster is nodata in the mask, never "clear"
    return StackResult(
        data=data,
        scl=scl,
        product_mask=mask,
        valid_fraction=float(valid.mean()) if valid.size else 0.0,
        seconds=time.monotonic() - t0,
    )
