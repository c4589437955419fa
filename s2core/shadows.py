"""s2core.shadows: where a cloud can cast its shadow under the real sun — the corridor test for shadow masks.

A cloud at height ``h`` above the ground casts its shadow ``h · tan(θ_sun)`` away from the sun (the
anti-solar azimuth). The satellite sees the cloud itself displaced too: its image lies ``h · tan(θ_view)``
from the point under it, away from the satellite (parallax). Relative to where the cloud *appears* in
the image, its shadow therefore lies at ``h · v`` with::

    v = tan(θ_view) · u(φ_view) − tan(θ_sun) · u(φ_sun)        u(φ) = (east: sin φ, north: cos φ)

where ``φ_sun`` is the azimuth the sun is in and ``φ_view`` the azimuth the satellite is in, both
clockwise from north (the STAC ``view`` and SAFE ``MTD_TL.xml`` conventions), and θ are zenith angles.
For heights ``min_height … max_height`` the shadow of a cloud pixel lies on a segment; the union of
those segments over the cloud pixels is the **corridor**: a directional dilation of the cloud mask.
A shadow pixel outside every corridor has no cloud that could cast it (Fmask projects clouds the same
way to *find* shadows; here the projection *rejects* impossible ones, which is cheap at any size).

Arrays are (H, W) booleans on a north-up grid (row 0 is the northern edge), ``pixel_size`` and heights
in metres. Example::

    >>> import numpy as np
    >>> from s2core.shadows import check_shadows
    >>> cloud = np.zeros((200, 200), bool); cloud[150:170, 150:170] = True   # a cloud in the south-east
    >>> shadow = np.zeros_like(cloud); shadow[100:110, 100:110] = True       # north-west of it
    >>> shadow[180:190, 20:30] = True                                         # south-west: no cloud casts it
    >>> kept = check_shadows(cloud, shadow, sun_azimuth=135.0, sun_zenith=50.0, pixel_size=10.0)
    >>> bool(kept[105, 105]), bool(kept[185, 25])
    (True, False)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from s2core.errors import InvalidParameter
from s2core.model.request import MAX_CLOUD_HEIGHT, MIN_CLOUD_HEIGHT

log = logging.getLogger(__name__)

#: Above this sun zenith angle (°) shadows are unbounded: nothing can be ruled out.
MAX_SUN_ZENITH = 89.0
#: At most this many (cell × offset) operations per corridor; larger inputs are swept on coarser cells.
SWEEP_BUDGET = 1_000_000_000


@dataclass(frozen=True)
class SunGeometry:
    """Sun and view angles of an acquisition in degrees (azimuths clockwise from north, toward the sun /
    the satellite; zenith angles from the vertical)."""

    sun_azimuth: float
    sun_zenith: float
    view_zenith: float = 0.0
    view_azimuth: float = 0.0

    @property
    def usable(self) -> bool:
        """True when every angle is known and the sun is high enough for bounded shadows."""
        values = (self.sun_azimuth, self.sun_zenith, self.view_zenith, self.view_azimuth)
        return all(v is not None and math.isfinite(v) for v in values) and 0.0 <= self.sun_zenith <= MAX_SUN_ZENITH

    def offset_per_metre(self) -> tuple[float, float]:
        """(rows, columns) ground offset of a shadow from its cloud's image, in metres per metre of
        cloud height; rows grow southwards (north-up grid)."""
        ts, tv = math.tan(math.radians(self.sun_zenith)), math.tan(math.radians(self.view_zenith))
        east = tv * math.sin(math.radians(self.view_azimuth)) - ts * math.sin(math.radians(self.sun_azimuth))
        north = tv * math.cos(math.radians(self.view_azimuth)) - ts * math.cos(math.radians(self.sun_azimuth))
        return -north, east

    def segment(self, pixel_size: float, min_height: float, max_height: float
                ) -> tuple[tuple[float, float], tuple[float, float]]:
        """The shadow offsets (rows, columns) in pixels for the lowest and the highest cloud."""
        dr, dc = self.offset_per_metre()
        return ((dr * min_height / pixel_size, dc * min_height / pixel_size),
                (dr * max_height / pixel_size, dc * max_height / pixel_size))


def _check_heights(pixel_size: float, min_height: float, max_height: float) -> None:
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise InvalidParameter(f"pixel_size must be a positive number of metres (got {pixel_size}).")
    if not (0.0 <= min_height <= max_height <= 100_000.0):
        raise InvalidParameter(
            f"Cloud heights must satisfy 0 <= min_height <= max_height <= 100000 m (got {min_height:g} and "
            f"{max_height:g}): e.g. 200 and 12000.")


def _offsets(start: tuple[float, float], end: tuple[float, float], limit: int) -> np.ndarray:
    """Integer (rows, columns) offsets every ≤ 1 px along ``start → end``, beyond ``limit`` px left out."""
    steps = int(math.ceil(max(abs(end[0] - start[0]), abs(end[1] - start[1])))) + 1
    t = np.linspace(0.0, 1.0, steps)
    pts = np.rint(np.stack([start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])], axis=1))
    pts = pts[(np.abs(pts) <= limit).all(axis=1)].astype(np.int64)
    return np.unique(pts, axis=0) if len(pts) else pts.reshape(0, 2)


def _sweep(cells: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The union of ``cells`` shifted by each (rows, columns) offset (pixels shifted out are dropped)."""
    h, w = cells.shape
    out = np.zeros_like(cells)
    for dr, dc in offsets:
        if abs(dr) >= h or abs(dc) >= w:
            continue
        out[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] |= \
            cells[max(-dr, 0):h - max(dr, 0), max(-dc, 0):w - max(dc, 0)]
    return out


def block_any(mask: np.ndarray, factor: int) -> np.ndarray:
    """True for each ``factor`` × ``factor`` block with any True pixel (edges padded with False)."""
    if factor == 1:
        return mask.copy()
    h, w = mask.shape
    hh, ww = -(-h // factor), -(-w // factor)
    padded = np.zeros((hh * factor, ww * factor), dtype=bool)
    padded[:h, :w] = mask
    return padded.reshape(hh, factor, ww, factor).any(axis=(1, 3))


def expand_cells(cells: np.ndarray, factor: int, shape: tuple[int, int], origin: tuple[int, int] = (0, 0)
                 ) -> np.ndarray:
    """Cells back to pixels: a (``shape``) array whose pixel (0, 0) lies in cell ``origin`` (rows,
    columns) and each cell covers ``factor`` × ``factor`` pixels. With ``factor`` > 1 the True cells
    are first widened by one (the sub-cell rounding of offsets: the result contains the exact corridor)."""
    r0, c0 = origin
    if factor == 1:
        return cells[r0:r0 + shape[0], c0:c0 + shape[1]].copy()
    grown = cv2.dilate(cells.view(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0).view(bool)
    rows = r0 + np.arange(shape[0]) // factor
    cols = c0 + np.arange(shape[1]) // factor
    return grown[rows[:, None], cols[None, :]]


def sweep_factor(shape: tuple[int, int], n_offsets: int, budget: Optional[int] = None) -> int:
    """The smallest cell size (in pixels) at which sweeping ``n_offsets`` offsets stays within ``budget``
    (default :data:`SWEEP_BUDGET`)."""
    budget = SWEEP_BUDGET if budget is None else budget
    pixels = shape[0] * shape[1]
    f = 1
    while pixels / (f * f) * max(1.0, n_offsets / f) > budget:
        f += 1
    return f


def cast_corridor(
    cloud: np.ndarray,
    sun_azimuth: float,
    sun_zenith: float,
    pixel_size: float,
    min_height: float = MIN_CLOUD_HEIGHT,
    max_height: float = MAX_CLOUD_HEIGHT,
    *,
    view_zenith: float = 0.0,
    view_azimuth: float = 0.0,
    outside: bool = False,
) -> np.ndarray:
    """Where the clouds of ``cloud`` can cast a shadow: bool (H, W), the directional dilation of
    ``cloud`` along the shadow offsets of cloud heights ``min_height … max_height`` (module docstring).

    ``outside`` says what lies beyond the array: False (no cloud; the caller passed every cloud) or
    True (unknown: a cloud there may cast into the array). Angles that are missing (NaN) or a sun lower
    than :data:`MAX_SUN_ZENITH` leave nothing to rule out: the corridor is everything (logged).
    Large inputs are swept on cells of several pixels (:func:`sweep_factor`); the corridor then holds
    the exact one plus at most one cell around it. Cost: a few ms per megapixel.
    """
    cloud = np.asarray(cloud, dtype=bool)
    if cloud.ndim != 2:
        raise InvalidParameter(f"cloud must be a 2-D (H, W) array (got shape {cloud.shape}).")
    _check_heights(pixel_size, min_height, max_height)
    geometry = SunGeometry(sun_azimuth, sun_zenith, view_zenith, view_azimuth)
    if not geometry.usable:
        log.warning("sun angles %s cannot bound shadows: every pixel may be shadow", geometry)
        return np.ones(cloud.shape, dtype=bool)
    h, w = cloud.shape
    start, end = geometry.segment(pixel_size, min_height, max_height)
    limit = h + w
    factor = sweep_factor(cloud.shape, len(_offsets(start, end, limit)))
    cells = block_any(cloud, factor)
    offsets = _offsets((start[0] / factor, start[1] / factor), (end[0] / factor, end[1] / factor),
                       limit // factor + 1)
    if outside:  # a frame of unknown sky on every side a shadow can come from
        pad = int(np.abs(offsets).max()) + 1 if len(offsets) else 0
        cells = np.pad(cells, pad, constant_values=True)
        corridor = _sweep(cells, offsets)[pad:pad + cells.shape[0] - 2 * pad, pad:pad + cells.shape[1] - 2 * pad]
    else:
        corridor = _sweep(cells, offsets)
    return expand_cells(corridor, factor, cloud.shape)


def check_shadows(
    cloud: np.ndarray,
    shadow: np.ndarray,
    sun_azimuth: float,
    sun_zenith: float,
    pixel_size: float,
    min_height: float = MIN_CLOUD_HEIGHT,
    max_height: float = MAX_CLOUD_HEIGHT,
    *,
    view_zenith: float = 0.0,
    view_azimuth: float = 0.0,
    outside: bool = False,
) -> np.ndarray:
    """The shadow pixels that some cloud can cast: ``shadow & cast_corridor(cloud, …)``, bool (H, W).

    ``cloud`` should be the clouds before any dilation (model or product cloud). See
    :func:`cast_corridor` for the angles, ``outside`` and missing angles (then ``shadow`` comes back
    unchanged).
    """
    shadow = np.asarray(shadow, dtype=bool)
    if shadow.shape != np.shape(cloud):
        raise InvalidParameter(f"cloud and shadow differ in shape ({np.shape(cloud)} vs {shadow.shape}).")
    return shadow & cast_corridor(cloud, sun_azimuth, sun_zenith, pixel_size, min_height, max_height,
                                  view_zenith=view_zenith, view_azimuth=view_azimuth, outside=outside)


def reach(geometry: SunGeometry, pixel_size: float, max_height: float) -> tuple[int, int, int, int]:
    """How far (pixels: north, south, west, east) beyond a grid the clouds lie that can shadow it."""
    dr, dc = geometry.offset_per_metre()
    r, c = dr * max_height / pixel_size, dc * max_height / pixel_size
    # a shadow at offset +r (south) comes from a cloud r pixels north of it, and so on (1e-9: float dust)
    def up(v: float) -> int:
        return int(math.ceil(max(v, 0.0) - 1e-9)) + 1

    return up(r), up(-r), up(c), up(-c)


def corridor_in_context(
    cloud: np.ndarray,
    context: Optional[np.ndarray],
    context_factor: int,
    context_offset: tuple[int, int],
    geometry: SunGeometry,
    pixel_size: float,
    min_height: float,
    max_height: float,
    outside: bool = False,
) -> np.ndarray:
    """The corridor on a grid of ``cloud``'s shape, with clouds beyond the grid taken from ``context``.

    ``context`` is a coarser boolean raster around the grid (True: cloud, or no data to say there is
    none), of cells ``context_factor`` pixels wide; the grid's pixel (0, 0) is at cell ``context_offset``
    (rows, columns) of it. Without ``context`` the region beyond the grid counts as unknown (a cloud may
    be there), so shadows near the edges the sun shines from are kept; ``outside`` says the same of the
    region beyond ``context`` (True when it was cut short of the highest cloud's reach).
    """
    if context is None:
        return cast_corridor(cloud, geometry.sun_azimuth, geometry.sun_zenith, pixel_size, min_height, max_height,
                             view_zenith=geometry.view_zenith, view_azimuth=geometry.view_azimuth, outside=True)
    cells = context.copy()
    own = block_any(cloud, context_factor)
    r0, c0 = context_offset
    hh, ww = min(own.shape[0], cells.shape[0] - r0), min(own.shape[1], cells.shape[1] - c0)
    cells[r0:r0 + hh, c0:c0 + ww] |= own[:hh, :ww]
    corridor = cast_corridor(cells, geometry.sun_azimuth, geometry.sun_zenith, pixel_size * context_factor,
                             min_height, max_height, view_zenith=geometry.view_zenith,
                             view_azimuth=geometry.view_azimuth, outside=outside)
    return expand_cells(corridor, context_factor, cloud.shape, context_offset)
