"""s2core.write.cloud_nodata: set cloudy and shadowed pixels of the output raster to NoData.

The SNAP service's ``cloud_mask`` option, with four choices:

* ``none``: the raster keeps every pixel (the masks are separate files);
* ``product``: pixels the product mask (from SCL) calls cloud or shadow;
* ``model``: pixels the models' decision calls cloud or shadow (:class:`~s2core.model.decision.Decision`
  on the stored probabilities; no product mask, no dilation, no shadow check);
* ``merged``: pixels the merged mask (``mask.tif``) calls cloud or shadow.

The mask files themselves are unchanged; only ``raster.tif`` gets NoData (0) there. The rewrite
streams strips of rows and replaces the file atomically.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.windows import Window

from s2core.model.grid import Grid
from s2core.runfolder.layout import CLOUD_PROB, MASK, PROB_NODATA, PROB_SCALE, PRODUCT_MASK, SHADOW_PROB, raster_valid
from s2core.model.classes import CLOUD, SHADOW
from s2core.model.decision import Decision
from s2core.write.cog import STRIP_ROWS, cog_strip_writer

CloudMaskMode = Literal["none", "product", "model", "merged"]


def _strip(ds: rasterio.DatasetReader, r0: int, r1: int) -> np.ndarray:
    return ds.read(1, window=Window(0, r0, ds.width, r1 - r0))


def _sources(mode: CloudMaskMode, folder: Path) -> list[Path]:
    if mode == "merged":
        return [folder / MASK.file]
    if mode == "product":
        return [folder / PRODUCT_MASK.file]
    return [folder / CLOUD_PROB.file, folder / SHADOW_PROB.file]


def masked_rows(mode: CloudMaskMode, sources: list[rasterio.DatasetReader], r0: int, r1: int,
                decision: Decision) -> np.ndarray:
    """Rows ``r0:r1`` of the pixels to blank, from the open mask files of :func:`_sources`."""
    if mode in ("merged", "product"):
        m = _strip(sources[0], r0, r1)
        return (m == CLOUD) | (m == SHADOW)
    cloud, shadow = _strip(sources[0], r0, r1), _strip(sources[1], r0, r1)
    ok = (cloud != PROB_NODATA) & (shadow != PROB_NODATA)
    c, s = decision.flags(cloud / np.float32(PROB_SCALE), shadow / np.float32(PROB_SCALE))
    return (c | s) & ok


def blank_raster(raster: Path, grid: Grid, mode: CloudMaskMode, folder: Path, decision: Decision) -> float:
    """Rewrite ``raster`` with NoData where ``mode`` says cloud/shadow; returns the blanked fraction of valid pixels."""
    with ExitStack() as stack:
        src = stack.enter_context(rasterio.open(raster))
        sources = [stack.enter_context(rasterio.open(p)) for p in _sources(mode, folder)]
        meta = dict(nodata=src.nodata, descriptions=list(src.descriptions), scales=list(src.scales),
                    offsets=list(src.offsets), tags={**src.tags(), "CLOUD_MASK": mode},
                    band_tags=[src.tags(i) for i in range(1, src.count + 1)])
        blanked = valid = 0
        with cog_strip_writer(raster, grid, src.count, src.dtypes[0], **meta) as dst:
            for r0 in range(0, grid.height, STRIP_ROWS):
                r1 = min(grid.height, r0 + STRIP_ROWS)
                window = Window(0, r0, grid.width, r1 - r0)
                data = src.read(window=window)
                ok = raster_valid(data)
                hit = masked_rows(mode, sources, r0, r1, decision) & ok
                data[:, hit] = 0
                dst.write(data, window=window)
                blanked += int(hit.sum())
                valid += int(ok.sum())
    return blanked / valid if valid else 0.0
