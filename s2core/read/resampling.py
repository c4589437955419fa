"""s2core.read.resampling: SNAP's aggregation methods, vectorised over blocks with NumPy.

SNAP's Resample operator offers, for a band made coarser by an integer factor ``f``:

* ``downsampling`` of measurements: ``first`` (the first valid pixel of each f x f block in row
  order — the top-left one when it is valid, which is *not* what GDAL's nearest picks: GDAL takes
  the pixel under the block centre), ``min``, ``max``, ``mean`` (area-weighted: with integer
  factors every pixel has the same weight) and ``median``;
* ``flag_downsampling`` of flag/class rasters: ``first``, ``flag_and`` (bits set in every valid
  pixel), ``flag_or`` (bits set in any), ``flag_median_and`` (bits set in *more than half* of the
  valid pixels) and ``flag_median_or`` (bits set in *at least half*).

Every method skips nodata; an output pixel is nodata only when its block has no valid pixel.
Upsampling (nearest / bilinear / bicubic) is GDAL's; class and flag rasters always use nearest.
For a whole factor on the asset's own lattice, :func:`upsample` computes nearest and bilinear
itself (GDAL's pixel centres and values, 12x fewer CPU-seconds than GDAL's resampled RasterIO).
Blocks that run past the raster edge are padded with nodata (so they use the pixels they have).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import cv2
import numpy as np

from s2core.errors import InvalidParameter
from s2core.model.request import (DOWNSAMPLING, FLAG_DOWNSAMPLING, UPSAMPLING, DownsamplingMethod,
                                  FlagDownsamplingMethod, UpsamplingMethod)

__all__ = ["DOWNSAMPLING", "FLAG_DOWNSAMPLING", "UPSAMPLING", "DownsamplingMethod", "FlagDownsamplingMethod",
           "UpsamplingMethod", "check_method", "downsample", "downsample_flags", "upsample"]


def check_method(kind: str, value: str) -> str:
    """The method name, or InvalidParameter listing the valid ones."""
    choices = {"upsampling": UPSAMPLING, "downsampling": DOWNSAMPLING, "flag_downsampling": FLAG_DOWNSAMPLING}[kind]
    name = str(value).strip().lower()
    if name == "cubic" and kind == "upsampling":
        name = "bicubic"
    if name not in choices:
        raise InvalidParameter(f"Unknown {kind} method {value!r}: choose one of {', '.join(choices)}.")
    return name


def _blocks(arr: np.ndarray, factor: int, nodata: float) -> np.ndarray:
    """``(..., H/f, W/f, f*f)`` view of ``arr`` (padded with nodata to whole blocks)."""
    if factor < 1 or int(factor) != factor:
        raise InvalidParameter(f"Block aggregation needs a whole factor >= 1, got {factor}.")
    h, w = arr.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        pad = [(0, 0)] * (arr.ndim - 2) + [(0, ph), (0, pw)]
        arr = np.pad(arr, pad, constant_values=nodata)
    hh, ww = arr.shape[-2] // factor, arr.shape[-1] // factor
    lead = arr.shape[:-2]
    b = arr.reshape(*lead, hh, factor, ww, factor)
    b = np.moveaxis(b, -3, -2)  # (..., hh, ww, f, f)
    return b.reshape(*lead, hh, ww, factor * factor)


def _valid(blocks: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    if nodata is None:
        return np.ones(blocks.shape, dtype=bool)
    if isinstance(nodata, float) and np.isnan(nodata):
        return ~np.isnan(blocks)
    return blocks != nodata


def _first(blocks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    idx = np.argmax(valid, axis=-1)[..., np.newaxis]
    return np.take_along_axis(blocks, idx, axis=-1)[..., 0]


def _aggregate(arr: np.ndarray, factor: int, nodata: Optional[float],
               reduce: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> np.ndarray:
    """Blocks of ``arr``, reduced by ``reduce(blocks, valid, fill)``; nodata where a block has no valid pixel."""
    if factor == 1:
        return arr.copy()
    fill = nodata if nodata is not None else 0
    blocks = _blocks(arr, factor, fill)
    valid = _valid(blocks, nodata)
    out = reduce(blocks, valid, fill)
    return np.where(valid.any(axis=-1), out, fill).astype(arr.dtype, copy=False)


def downsample(arr: np.ndarray, factor: int, method: str = "first", nodata: Optional[float] = 0) -> np.ndarray:
    """Aggregate ``arr`` ((H, W) or (B, H, W)) by a whole ``factor`` with a SNAP downsampling method.

    The result keeps ``arr``'s dtype (``mean`` and ``median`` are rounded to the nearest integer for
    integer rasters) and is ``nodata`` where a block holds no valid pixel.
    """
    method = check_method("downsampling", method)
    integer = np.issubdtype(arr.dtype, np.integer)

    def reduce(blocks: np.ndarray, valid: np.ndarray, fill: float) -> np.ndarray:
        if method == "first":
            return _first(blocks, valid)
        if method in ("min", "max"):
            if integer:
                info = np.iinfo(arr.dtype)
                neutral = info.max if method == "min" else info.min
            else:
                neutral = np.inf if method == "min" else -np.inf
            masked = np.where(valid, blocks, neutral)
            return masked.min(axis=-1) if method == "min" else masked.max(axis=-1)
        values = np.where(valid, blocks.astype(np.float64), np.nan)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nodata blocks: filled by _aggregate
            out = np.nanmean(values, axis=-1) if method == "mean" else np.nanmedian(values, axis=-1)
        return np.rint(np.nan_to_num(out, nan=fill)) if integer else out

    return _aggregate(arr, factor, nodata, reduce)


def downsample_flags(arr: np.ndarray, factor: int, method: str = "first", nodata: Optional[int] = 0) -> np.ndarray:
    """Aggregate an integer flag/class raster by a whole ``factor`` with a SNAP flag method."""
    method = check_method("flag_downsampling", method)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidParameter(f"Flag downsampling needs an integer raster, got {arr.dtype}.")

    def reduce(blocks: np.ndarray, valid: np.ndarray, fill: float) -> np.ndarray:
        if method == "first":
            return _first(blocks, valid)
        if method == "flag_and":
            ones = np.array(~np.zeros((), dtype=arr.dtype))
            return np.bitwise_and.reduce(np.where(valid, blocks, ones), axis=-1)
        if method == "flag_or":
            return np.bitwise_or.reduce(np.where(valid, blocks, 0).astype(arr.dtype), axis=-1)
        n_valid = valid.sum(axis=-1)
        out = np.zeros(blocks.shape[:-1], dtype=arr.dtype)
        for bit in range(arr.dtype.itemsize * 8):
            mask = arr.dtype.type(1) << arr.dtype.type(bit)
            count = (((blocks & mask) != 0) & valid).sum(axis=-1)
            on = 2 * count > n_valid if method == "flag_median_and" else 2 * count >= n_valid
            out |= np.where(on & (n_valid > 0), mask, 0).astype(arr.dtype)
        return out

    return _aggregate(arr, factor, nodata, reduce)


def upsample(arr: np.ndarray, factor: int, method: str, box: tuple[int, int, int, int],
             dtype: np.dtype | type = np.float32) -> Optional[np.ndarray]:
    """The pixels ``box`` = ``(row, col, height, width)`` of ``arr`` upsampled ``factor`` times:
    ``(height * factor, width * factor)`` values of ``dtype``, ``None`` for a method it does not compute.

    Output pixel ``i`` sits at ``(i + 0.5) / factor - 0.5`` input pixels, as in GDAL. ``nearest``
    repeats each pixel; ``bilinear`` weighs the four pixels around, using ``arr``'s pixels beyond
    the box and replicating its edges, as GDAL's resampled RasterIO does over the same array
    (its values ±1 DN of rounding, tests/stack/test_strips.py). The result depends only on the box's
    pixels and their neighbours, never on where the box lies in ``arr``.
    """
    row, col, height, width = box
    if method == "nearest":
        block = arr[row:row + height, col:col + width]
        return np.repeat(np.repeat(block, factor, axis=0), factor, axis=1).astype(dtype, copy=False)
    if method != "bilinear":
        return None
    r0, c0 = max(0, row - 1), max(0, col - 1)  # one neighbour each side: the kernel's reach
    r1, c1 = min(arr.shape[0], row + height + 1), min(arr.shape[1], col + width + 1)
    src = arr[r0:r1, c0:c1]
    if src.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        src = src.astype(np.float64)
    # in the array's own type, as GDAL (an integer array's values are rounded, whatever ``dtype``)
    up = cv2.resize(src, ((c1 - c0) * factor, (r1 - r0) * factor), interpolation=cv2.INTER_LINEAR)
    y, x = (row - r0) * factor, (col - c0) * factor
    return up[y:y + height * factor, x:x + width * factor].astype(dtype, copy=False)
