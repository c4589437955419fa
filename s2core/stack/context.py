"""s2core.stack.context: the clouds around the AOI that can cast shadows into it (for the shadow check).

A cloud 12 km high under a sun 58° from the zenith casts its shadow 19 km away: the clouds that shadow
an AOI are often outside it. The product's own cloud classes (SCL 8, 9, 10) are read around the output
grid, as far as the highest cloud's shadow reaches on the side the sun shines from, on cells of about
20 m (SCL's own pixels), aligned with the grid. Pixels without data in any scene count as possible cloud
(nothing says they are clear). L1C scenes (no SCL) give no context: the shadow check then keeps
shadows near the grid's sunward edges (:func:`s2core.shadows.corridor_in_context`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from affine import Affine

from s2core.errors import S2CoreError
from s2core.model.classes import CLOUD, NODATA, product_mask_from_scl
from s2core.model.grid import Grid
from s2core.model.request import PreprocessRequest
from s2core.model.scene import Acquisition, Signer
from s2core.progress import CancelToken
from s2core.read.reader import ReadPolicy, read_to_grid
from s2core.shadows import SunGeometry, reach

log = logging.getLogger(__name__)

#: Cell size (m) of the context: SCL's own pixels.
CONTEXT_CELL_M = 20.0
#: The context reaches at most this far (m) beyond the grid (a sun near the horizon casts shadows further).
MAX_CONTEXT_M = 60_000.0


@dataclass
class CloudContext:
    """Possible clouds (bool) on cells of ``factor`` × ``factor`` output pixels around the grid; the grid's
    pixel (0, 0) lies in cell ``offset`` (rows, columns). ``complete`` is False when the context was cut at
    :data:`MAX_CONTEXT_M`."""

    cells: np.ndarray
    factor: int
    offset: tuple[int, int]
    complete: bool = True


def context_grid(grid: Grid, geometry: SunGeometry, max_height: float) -> tuple[Grid, int, tuple[int, int], bool]:
    """The context's grid (cells of ``factor`` output pixels, aligned with ``grid``), ``factor``, the cell
    of the grid's pixel (0, 0), and whether the whole reach fits :data:`MAX_CONTEXT_M`."""
    factor = max(1, int(round(CONTEXT_CELL_M / grid.resolution_m)))
    cell_m = grid.resolution_m * factor
    north, south, west, east = reach(geometry, cell_m, max_height)
    cap = int(math.ceil(MAX_CONTEXT_M / cell_m))
    complete = max(north, south, west, east) <= cap
    north, south, west, east = (min(v, cap) for v in (north, south, west, east))
    rows, cols = math.ceil(grid.height / factor), math.ceil(grid.width / factor)
    transform = grid.transform @ Affine.translation(-west * factor, -north * factor) @ Affine.scale(factor)
    return Grid(grid.crs, transform, cols + west + east, rows + north + south), factor, (north, west), complete


def read_cloud_context(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    geometry: SunGeometry,
    max_height: float,
    *,
    sign: Signer,
    cancel: Optional[CancelToken] = None,
) -> Optional[CloudContext]:
    """The product's clouds around ``grid`` (:class:`CloudContext`), or None when the scenes have no SCL or
    it cannot be read (logged: the check then treats the surroundings as unknown)."""
    if not geometry.usable or any("SCL" not in s.mask_layers for s in acquisition.scenes):
        return None
    ctx, factor, offset, complete = context_grid(grid, geometry, max_height)
    policy = ReadPolicy(timeout=request.dl_timeout, max_retries=request.max_retries)
    cloud = np.zeros(ctx.shape, dtype=bool)
    known = np.zeros(ctx.shape, dtype=bool)
    for scene in acquisition.scenes:
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            scl = read_to_grid(scene.href("SCL"), ctx, is_class=True, sign=sign, policy=policy,
                               label=f"SCL around the AOI of {scene.id}")
        except S2CoreError as exc:
            log.warning("no cloud context for the shadow check: %s", exc)
            return None
        codes = product_mask_from_scl(scl)
        cloud |= codes == CLOUD
        known |= codes != NODATA
    cloud |= ~known
    return CloudContext(cloud, factor, offset, complete)
