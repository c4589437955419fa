"""s2core.read.reader: windowed reads of one asset onto the output grid, bounded in time, with retries.

GDAL's warper reads only the source blocks that intersect the output grid (plus the
resampling kernel's margin) through HTTP range requests (``/vsicurl/``), so a field-sized
AOI never downloads a whole 10980² tile.

``dl_timeout`` bounds the *whole* read of one asset, retries included: every HTTP request
gets ``GDAL_HTTP_TIMEOUT`` = the time left, and the caller stops waiting at the deadline.
"""

from __future__ import annotations

import logging
import math
import re
import random
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal, Optional
from urllib.parse import urlparse

import numpy as np
import rasterio
import requests
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.warp import reproject
from scipy import ndimage

from s2core.deadline import run_with_deadline
from s2core.model.scene import Signer, no_signing
from s2core.errors import AssetReadError, AssetTimeout
from s2core.read.gdal_mem import open_array
from s2core.model.grid import Grid
from s2core.read.resampling import downsample, downsample_flags, upsample

log = logging.getLogger(__name__)

#: GDAL options for cloud-native reads (set per read, thread-locally, via rasterio.Env).
GDAL_HTTP_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    # each HTTP request retries transient statuses itself (a read is many range requests: without this one
    # 503 among them fails the whole read); s2core retries the whole read on top, within dl_timeout
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_RETRY_CODES": "408,425,500,502,503,504",  # not 429: GDAL ignores Retry-After; s2core honours it
    # HEAD for the file size (the default): a GET without a range, aborted once the size is known, makes the
    # server send up to its socket buffers of data nobody reads (0.14 MB per file on loopback)
    "CPL_VSIL_CURL_USE_HEAD": "YES",
    "VSI_CACHE": "TRUE",
    "CPL_VSIL_NETWORK_STATS_ENABLED": "YES",
    # a window's tiles are fetched in one batch of ranges, up to this many bytes (GDAL's default: 10 MB);
    # tiles beyond it were read one by one with /vsicurl/'s growing read-ahead, which fetched up to 2 MB
    # past them (a 20 x 20 km AOI of 1024² DEFLATE tiles: 9 tiles of ~1.3 MB per band). A strip of 1024
    # rows across a whole 10980² band touches at most 22 tiles (~30 MB)
    "GDAL_MAX_RAW_BLOCK_CACHE_SIZE": str(64 << 20),
}

RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "average": Resampling.average,
    "bicubic": Resampling.cubic,
}


@dataclass(frozen=True)
class ReadPolicy:
    """How long one asset read may take and how often it is retried.

    Attributes:
        timeout: seconds for the whole read of one asset, retries included (``dl_timeout``).
        max_retries: extra attempts after a transient failure (5xx, connection reset, 403 re-sign).
        backoff: first back-off in seconds; doubles each retry, with jitter.
    """

    timeout: float = 120.0
    max_retries: int = 3
    backoff: float = 0.5


class BlockRowCache:
    """Decoded block rows of the assets of one acquisition read strip after strip, top to bottom.

    An upsampling kernel needs asset rows beyond its strip, and a 20 m JPEG2000 tile spans two
    10 m strips: without this cache each tile row of a coarse band would be decoded two or three
    times. Rows above the latest request of an asset are let go, so it holds about two block rows
    per asset. Thread-safe across assets (each asset is read by one thread at a time).
    """

    def __init__(self) -> None:
        self._blocks: dict[tuple[str, int, int, int], dict[int, np.ndarray]] = {}
        self._lock = threading.Lock()

    def read(self, src: Any, key: str, band: int, window: Window) -> np.ndarray:
        """``src.read(band, window=window)`` for an integer window inside the asset, from cached block rows."""
        c0, r0, w, h = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
        block = max(1, int(src.block_shapes[band - 1][0]))
        bh = block * math.ceil(512 / block)  # whole blocks, at least 512 rows (striped files have 1-row blocks)
        first, last = r0 // bh, (r0 + h - 1) // bh
        with self._lock:
            blocks = self._blocks.setdefault((key, band, c0, w), {})
        for b in [b for b in blocks if b < first]:
            del blocks[b]
        for b in range(first, last + 1):
            if b not in blocks:
                b0 = b * bh
                blocks[b] = src.read(band, window=Window(c0, b0, w, min(src.height, b0 + bh) - b0))
        rows = [blocks[b] for b in range(first, last + 1)]
        joined = rows[0] if len(rows) == 1 else np.concatenate(rows)
        return joined[r0 - first * bh: r0 - first * bh + h]


#: GDAL's closest kernels, used when the grids do not line up (other CRS, non-integer ratio).
GDAL_DOWNSAMPLING = {"first": Resampling.nearest, "min": Resampling.min, "max": Resampling.max,
                     "mean": Resampling.average, "median": Resampling.med}
GDAL_FLAG_DOWNSAMPLING = {"first": Resampling.nearest, "flag_and": Resampling.nearest,
                          "flag_or": Resampling.nearest, "flag_median_and": Resampling.mode,
                          "flag_median_or": Resampling.mode}


FailureKind = Literal["auth", "missing", "transient", "truncated", "corrupt", "not_raster", "refused"]

#: HTTP statuses worth another attempt (request timeout, too early, too many requests, server errors).
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_STATUS_RE = re.compile(r"HTTP response code: (\d{3})")
_SHORT_RE = re.compile(r"got (\d+) bytes, expected (\d+)")
_DECODE_RE = re.compile(r"Decod|IReadBlock failed|TIFFRead|TIFFFill|LZW|ZIP|Deflate|JPEG|OpenJPEG|opj_|"
                        r"Corrupt|corrupt|Invalid tile|TIFFReadDirectory", re.I)
CPLE_HTTP_RESPONSE = 11  # GDAL's error class of an HTTP status answer (CPLE_HttpResponseError)


@dataclass(frozen=True)
class ReadFailure:
    """Why one read of an asset failed, from GDAL's error class and the HTTP status (not message text alone)."""

    kind: FailureKind
    status: Optional[int]
    detail: str  #: the most specific message of the error chain (signed query strings removed)

    @property
    def retry(self) -> bool:
        """Whether another attempt may succeed."""
        return self.kind in ("auth", "transient", "truncated")


def classify_failure(exc: BaseException) -> ReadFailure:
    """Classify a failed read from the whole exception chain (rasterio wraps GDAL's CPLE errors)."""
    chain: list[BaseException] = []
    x: Optional[BaseException] = exc
    while x is not None and len(chain) < 10:
        chain.append(x)
        x = x.__cause__ or x.__context__
    messages = [str(e) for e in chain if str(e)]
    text = " | ".join(messages)
    status = next((int(m.group(1)) for m in map(_STATUS_RE.search, messages) if m), None)
    http = status is not None or any(getattr(e, "errno", None) == CPLE_HTTP_RESPONSE for e in chain)
    detail = _short_text(messages[-1] if messages else repr(exc))
    if status is not None:
        if status in (401, 403):
            return ReadFailure("auth", status, detail)
        if status in (404, 410):
            return ReadFailure("missing", status, detail)
        if status == 416:  # a range past the end: the file is shorter than its own header says
            return ReadFailure("truncated", status, detail)
        if status in TRANSIENT_STATUSES:
            return ReadFailure("transient", status, detail)
        return ReadFailure("refused", status, detail)
    if "not recognized as being in a supported file format" in text or "not a supported file format" in text:
        return ReadFailure("not_raster", None, detail)
    if "No such file" in text or "does not exist" in text:
        return ReadFailure("missing", None, detail)
    if _SHORT_RE.search(text):
        return ReadFailure("truncated", None, _short_text(_SHORT_RE.search(text).group(0)))
    if not http and _DECODE_RE.search(text):
        return ReadFailure("corrupt", None, detail)
    return ReadFailure("transient", None, detail)  # connection reset, refused, DNS, curl timeouts


def _short_text(text: str) -> str:
    text = text.replace("\n", " ")
    return re.sub(r"\?[^\s'\"]*", "?…", text)[:200] if "?" in text else text[:200]


def _warp(href: str, grid: Grid, resampling: str, is_class: bool, http_timeout: float,
          downsampling: str = "mean", flag_downsampling: str = "first", band: int = 1,
          zero_is_data: bool = False, as_dn: bool = False,
          cache: Optional[tuple[BlockRowCache, str]] = None, fresh: bool = False) -> np.ndarray:
    # Remote: no directory listing (sidecar probing costs requests). Local: sidecars such
    # as .aux.xml may carry the georeferencing, so GDAL may look for them.
    env = dict(GDAL_HTTP_OPTIONS) if "://" in href else {"CPL_VSIL_NETWORK_STATS_ENABLED": "YES",
                                                         "GDAL_NUM_THREADS": "ALL_CPUS"}  # JPEG2000 tiles in parallel
    if fresh and "://" in href:  # a retry: past answers (a 503, a stale length) must not come from GDAL's cache
        env["CPL_VSIL_CURL_NON_CACHED"] = "/vsicurl/" + href
    env["GDAL_HTTP_TIMEOUT"] = str(max(1, math.ceil(http_timeout)))
    env["GDAL_HTTP_CONNECTTIMEOUT"] = str(max(1, math.ceil(min(http_timeout, 15.0))))
    with rasterio.Env(**env), warnings.catch_warnings():
        # rasterio's in-memory destination has no georeferencing until the warp sets it
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(href) as src:
            if src.crs is None:
                raise AssetReadError(f"{href} has no CRS: it is not a georeferenced Sentinel-2 asset.")
            src_nodata = src.nodata if src.nodata is not None else (None if zero_is_data else 0)
            src_res = abs(src.transform.a)
            coarser = src_res > 0 and grid.resolution_m > src_res * 1.001 and _src_in_metres(src)
            factor = _block_factor(src, grid) if coarser else None
            if factor is not None:
                # SNAP's aggregation: read the native pixels under the grid, aggregate whole blocks
                fine = Grid(grid.crs, grid.transform @ Affine.scale(1 / factor), grid.width * factor,
                            grid.height * factor)
                at = _same_pixels(src, fine)  # usually the asset's own pixels: a windowed read
                native = (_window_read(src, fine, at, src_nodata, is_class, band) if at is not None
                          else _reproject(src, fine, src_nodata, is_class, Resampling.nearest, band))
                if is_class:
                    return downsample_flags(native, factor, flag_downsampling, nodata=None if zero_is_data else 0)
                return downsample(native, factor, downsampling, nodata=np.nan)
            # uint16 DNs with 0 = nodata, half the memory of float32 (same values: GDAL rounds to nearest)
            dn = as_dn and not is_class and src.dtypes[band - 1] == "uint16" and src_nodata == 0
            offset = _same_pixels(src, grid)
            if offset is not None:  # the grid is the asset's own pixel grid: a windowed read, no warp
                return _window_read(src, grid, offset, src_nodata, is_class, band, dn)
            if is_class:
                method = GDAL_FLAG_DOWNSAMPLING[flag_downsampling] if coarser else Resampling.nearest
            else:
                method = GDAL_DOWNSAMPLING[downsampling] if coarser else RESAMPLING[resampling]
            sub = None if coarser else _subdivision(src, grid)
            if sub is not None:  # a 20/60 m band on a 10 m grid: whole-factor upsampling
                dtype = np.uint8 if is_class else (np.uint16 if dn else np.float32)
                out = _subdivided_read(src, grid, sub, src_nodata, method, band, dtype, cache)
                if out is not None:
                    return out
            return _reproject(src, grid, src_nodata, is_class, method, band, dn and not coarser)


def _reproject(src: Any, grid: Grid, src_nodata: Optional[float], is_class: bool, method: Resampling,
               band: int = 1, dn: bool = False) -> np.ndarray:
    if is_class or dn:
        dst = np.zeros(grid.shape, dtype=np.uint16 if dn else np.uint8)
        dst_nodata: float = 0
    else:
        dst = np.full(grid.shape, np.nan, dtype=np.float32)
        dst_nodata = np.nan
    reproject(
        source=rasterio.band(src, band),
        destination=dst,
        src_transform=src.transform,
        src_crs=src.crs,
        src_nodata=src_nodata,
        dst_transform=grid.transform,
        dst_crs=grid.rio_crs,
        dst_nodata=dst_nodata,
        resampling=method,
        init_dest_nodata=True,
        num_threads=1,
    )
    return dst


def _lattice(src: Any, grid: Grid) -> Optional[tuple[float, float, float]]:
    """``(ratio, dx, dy)`` when asset and grid share a CRS with north-up square pixels: grid pixel size
    over asset pixel size, and the grid's corner in asset pixels; else None."""
    try:
        if not src.crs or src.crs != grid.rio_crs:
            return None
    except Exception:  # noqa: BLE001
        return None
    st, gt = src.transform, grid.transform
    if st.b or st.d or gt.b or gt.d or st.e != -st.a or gt.e != -gt.a:
        return None
    return gt.a / st.a, (gt.c - st.c) / st.a, (gt.f - st.f) / st.e


def _whole(value: float) -> Optional[int]:
    n = round(value)
    return n if abs(value - n) <= 1e-6 else None


def _alignment(src: Any, grid: Grid) -> Optional[tuple[int, int, int]]:
    """``(factor, col, row)`` when the grid's pixels are whole blocks of ``factor`` × ``factor`` asset
    pixels in one CRS (north-up, square), the grid's corner at asset pixel ``(col, row)``; else None."""
    lattice = _lattice(src, grid)
    if lattice is None:
        return None
    factor, col, row = (_whole(v) for v in lattice)
    if factor is None or factor < 1 or col is None or row is None:
        return None
    return factor, col, row


def _subdivision(src: Any, grid: Grid) -> Optional[tuple[int, int, int]]:
    """``(k, col, row)`` when every asset pixel is exactly ``k`` × ``k`` grid pixels (k ≥ 2) in one CRS,
    the grid's corner at ``(col, row)`` of that k-times finer lattice of the asset; else None."""
    lattice = _lattice(src, grid)
    if lattice is None or lattice[0] >= 1:
        return None
    ratio, dx, dy = lattice
    k = _whole(1.0 / ratio)
    if k is None or k < 2:
        return None
    col, row = _whole(dx * k), _whole(dy * k)
    return (k, col, row) if col is not None and row is not None else None


def _block_factor(src: Any, grid: Grid) -> Optional[int]:
    """The whole number (≥ 2) of asset pixels per grid pixel when both grids line up; else None."""
    aligned = _alignment(src, grid)
    return aligned[0] if aligned and aligned[0] >= 2 else None


def _same_pixels(src: Any, grid: Grid) -> Optional[tuple[int, int]]:
    """(col, row) of the grid's corner in the asset when both share one pixel grid; else None."""
    aligned = _alignment(src, grid)
    return aligned[1:] if aligned and aligned[0] == 1 else None


def _window_read(src: Any, grid: Grid, offset: tuple[int, int], src_nodata: Optional[float], is_class: bool,
                 band: int, dn: bool = False) -> np.ndarray:
    """Read the grid's window of the asset (outside the asset: nodata), in :func:`_reproject`'s conventions."""
    col, row = offset
    window = Window(col, row, grid.width, grid.height)
    r0, r1 = max(0, -row), min(grid.height, src.height - row)
    c0, c1 = max(0, -col), min(grid.width, src.width - col)
    fill = src_nodata if src_nodata is not None else 0
    # GDAL converts while reading: no second copy of the window
    dtype = np.uint8 if is_class else (np.uint16 if dn else np.float32)
    if (r0, c0, r1, c1) == (0, 0, grid.height, grid.width):
        out = src.read(band, window=window, out_dtype=dtype)
        inside = None
    else:
        out = src.read(band, window=window, boundless=True, fill_value=fill, out_dtype=dtype)
        inside = np.zeros(grid.shape, dtype=bool)
        if r1 > r0 and c1 > c0:
            inside[r0:r1, c0:c1] = True
    if is_class or dn:  # 0 is nodata already (dn: the source's nodata is 0)
        if inside is not None:
            out[~inside] = 0
        return out
    if src_nodata is not None:
        nd = np.float32(src_nodata)
        for row in range(0, out.shape[0], 1024):  # by strips: a whole-grid boolean is 120 MB at 10980²
            strip = out[row:row + 1024]
            strip[strip == nd] = np.nan
    if inside is not None:
        out[~inside] = np.nan
    return out


#: Asset pixels beyond a window that each kernel reads.
_KERNEL_MARGIN = {Resampling.nearest: 0, Resampling.bilinear: 1, Resampling.cubic: 2}
#: Upsampled reads are computed by blocks of this many asset pixels, anchored on the asset's own
#: grid, each block whole: whatever strips or AOI a grid has, a pixel is computed the same way.
_CHUNK = 256


def _subdivided_read(src: Any, grid: Grid, sub: tuple[int, int, int], src_nodata: Optional[float],
                     method: Resampling, band: int, dtype: Any,
                     cache: Optional[tuple[BlockRowCache, str]] = None) -> Optional[np.ndarray]:
    """Upsample by a whole factor from the asset's own pixels instead of the warper: bicubic with GDAL's
    resampled RasterIO (5-10x faster than the warper), nearest and bilinear with :func:`upsample` (12x
    fewer CPU-seconds than that).

    Only the asset pixels under the grid (plus the kernel's margin) are read, at their own
    resolution, and resampled from memory by blocks of :data:`_CHUNK` asset pixels anchored on the
    asset's grid, so that a pixel gets the same value whatever strip or AOI it is read in. Values
    are the warper's (±1 DN of rounding) except within two asset pixels of the asset's edge with
    bicubic, where the warper falls back to bilinear; a pixel whose kernel meets nodata gets the
    warper's own value (its nodata rules). Returns None for a case it does not handle, in
    :func:`_reproject`'s conventions otherwise. ``cache`` (a cache and the asset's key) serves
    asset rows that earlier strips decoded already.
    """
    k, col, row = sub  # the grid's corner on the k-times finer lattice of the asset
    if method not in _KERNEL_MARGIN or (dtype == np.uint8 and src_nodata not in (None, 0)):
        return None
    height, width = src.height * k, src.width * k  # the asset on the fine lattice
    g0, g1 = max(0, -row), min(grid.height, height - row)  # grid rows and columns inside the asset
    h0, h1 = max(0, -col), min(grid.width, width - col)
    out = np.full(grid.shape, np.nan if dtype == np.float32 else 0, dtype=dtype)
    if g1 <= g0 or h1 <= h0:
        return out
    margin = _KERNEL_MARGIN[method]
    # the asset pixels that the grid's kernels use
    r0, r1 = max(0, (row + g0) // k - margin), min(src.height, (row + g1 - 1) // k + 1 + margin)
    c0, c1 = max(0, (col + h0) // k - margin), min(src.width, (col + h1 - 1) // k + 1 + margin)
    window = Window(c0, r0, c1 - c0, r1 - r0)
    native = cache[0].read(src, cache[1], band, window) if cache else src.read(band, window=window)
    bad = None  # asset pixels whose neighbourhood holds nodata: there the warper decides
    if src_nodata is not None and method != Resampling.nearest:  # nearest carries nodata through as it is
        nodata = np.isnan(native) if math.isnan(src_nodata) else native == native.dtype.type(src_nodata)
        if nodata.any():
            bad = ndimage.binary_dilation(nodata, structure=np.ones((2 * margin + 1,) * 2, bool))
        del nodata
    step = k * _CHUNK
    ys = range((row + g0) // step * step, row + g1, step)  # the blocks under the grid, on the fine lattice
    xs = range((col + h0) // step * step, col + h1, step)
    # a canvas over the blocks (clipped to the asset) holding the pixels read; the rest is never used
    top, left = max(0, ys[0] // k - margin), max(0, xs[0] // k - margin)
    canvas = np.zeros((min(src.height, ys[-1] // k + _CHUNK + margin) - top,
                       min(src.width, xs[-1] // k + _CHUNK + margin) - left), dtype=native.dtype)
    canvas[r0 - top: r1 - top, c0 - left: c1 - left] = native
    del native
    ours = method in (Resampling.nearest, Resampling.bilinear)  # computed here; bicubic: GDAL's RasterIO
    with (nullcontext() if ours else open_array(canvas)) as mem:
        for ya in ys:
            yb = min(ya + step, height)
            a, b = max(g0, ya - row), min(g1, yb - row)
            for xa in xs:
                xb = min(xa + step, width)
                c, d = max(h0, xa - col), min(h1, xb - col)
                box = (ya // k - top, xa // k - left, (yb - ya) // k, (xb - xa) // k)
                block = (upsample(canvas, k, method.name, box, dtype) if ours else
                         mem.read(1, window=Window(box[1], box[0], box[3], box[2]), out_shape=(yb - ya, xb - xa),
                                  resampling=method, out_dtype=dtype))
                part = block[a - (ya - row): b - (ya - row), c - (xa - col): d - (xa - col)]
                if method != Resampling.nearest and dtype != np.float32:
                    part[part == 0] = 1  # a bicubic undershoot is data, not nodata (as the warper does)
                if bad is not None:
                    near = bad[np.ix_((row + np.arange(a, b)) // k - r0, (col + np.arange(c, d)) // k - c0)]
                    if near.any():
                        warped = _reproject(src, grid.part(a, b, c, d), src_nodata, dtype == np.uint8, method,
                                            band, dtype == np.uint16)
                        part[near] = warped[near]
                out[a:b, c:d] = part
    if dtype == np.float32 and src_nodata is not None and not math.isnan(src_nodata):
        out[out == np.float32(src_nodata)] = np.nan  # nearest carried nodata through: NaN, as the warper
    return out


def _src_in_metres(src: Any) -> bool:
    try:
        return bool(src.crs.is_projected)
    except Exception:  # noqa: BLE001
        return False


def read_to_grid(
    href: str,
    grid: Grid,
    *,
    resampling: str = "bilinear",
    downsampling: str = "mean",
    flag_downsampling: str = "first",
    is_class: bool = False,
    sign: Signer = no_signing,
    policy: ReadPolicy = ReadPolicy(),
    label: str = "",
    band: int = 1,
    zero_is_data: bool = False,
    as_dn: bool = False,
    cache: Optional[BlockRowCache] = None,
) -> np.ndarray:
    """Read band ``band`` of one asset onto ``grid``.

    ``zero_is_data``: a class raster whose 0 is a value, not nodata (binary flag masks such as
    L1C ``MSK_CLASSI``); pixels outside it still come back as 0.
    ``as_dn``: a uint16 asset whose nodata is 0 may come back as uint16 with 0 = nodata (GDAL
    rounds to the nearest DN) when no block aggregation is involved: half the memory.
    ``cache``: shared by the reads of successive strips of rows of one grid (see :class:`BlockRowCache`).

    Reflectance assets come back as float32 DNs with NaN for nodata (so that a valid value
    never collides with the nodata value); class assets (SCL) as uint8 with 0 = nodata,
    always resampled with nearest neighbour.

    Raises:
        AssetTimeout: the read (retries included) took longer than ``policy.timeout``.
        AssetReadError: the asset is missing, corrupt, or kept failing.
    """
    what = label or href
    start = time.monotonic()
    force_sign = False
    last: Optional[ReadFailure] = None
    attempts = 0
    for attempt in range(policy.max_retries + 1):
        remaining = policy.timeout - (time.monotonic() - start)
        if remaining <= 0:
            break
        signed = sign(href, force=force_sign)
        attempts += 1
        try:
            return run_with_deadline(
                lambda: _warp(signed, grid, resampling, is_class, remaining, downsampling, flag_downsampling, band,
                              zero_is_data, as_dn, (cache, href) if cache is not None else None, fresh=attempt > 0),
                remaining, f"read {what}"
            )
        except TimeoutError:
            if last is not None:  # the deadline ended a retry: say what the earlier attempts met
                raise AssetTimeout(
                    f"Reading {what} from {_redact(href)} did not succeed within dl_timeout={policy.timeout:g} s: "
                    f"{_describe(last)} on {attempts - 1} attempt(s), then no answer in time; the server "
                    f"{_host(href)} is failing: retry later, or raise dl_timeout."
                ) from None
            raise AssetTimeout(
                f"Reading {what} took longer than dl_timeout={policy.timeout:g} s (server {_host(href)} too slow "
                "or not answering): raise dl_timeout, or retry later."
            ) from None
        except AssetReadError:
            raise
        except (RasterioIOError, RasterioError, OSError) as exc:
            last = classify_failure(exc)
            if not last.retry or (last.kind == "truncated" and attempt >= 1):
                raise AssetReadError(_failure_message(what, href, last, attempts)) from exc
            force_sign = last.kind == "auth"
            if attempt < policy.max_retries:
                delay = policy.backoff * (2**attempt) * (0.5 + random.random())
                if last.status == 429:  # too many requests: wait as long as the server asks (Retry-After)
                    delay = max(delay, retry_after(signed, policy.timeout - (time.monotonic() - start)))
                delay = min(delay, max(0.0, policy.timeout - (time.monotonic() - start) - 0.5))
                log.warning("read %s failed (%s), retry %d/%d in %.1fs", what, _describe(last), attempt + 1,
                            policy.max_retries, delay)
                if delay > 0:
                    time.sleep(delay)
    if last is None:
        raise AssetTimeout(f"Reading {what} took longer than dl_timeout={policy.timeout:g} s: raise dl_timeout.")
    raise AssetReadError(_failure_message(what, href, last, attempts))


def retry_after(href: str, limit: float) -> float:
    """Seconds a rate-limiting server asks to wait: its ``Retry-After`` (a HEAD request), at least 1 s,
    at most ``limit``. GDAL's own retries do not read the header, so s2core asks for it."""
    wait = 1.0
    if urlparse(href).scheme in ("http", "https"):
        try:
            answer = requests.head(href, timeout=min(5.0, max(0.5, limit)), allow_redirects=False)
            value = answer.headers.get("retry-after", "")
            if answer.status_code == 429 and value.strip().isdigit():
                wait = float(value)
        except requests.RequestException:
            pass
    return max(0.0, min(wait, limit - 0.5))


def _describe(f: ReadFailure) -> str:
    return f"HTTP {f.status}" if f.status is not None else f.detail


#: The message of each kind of failure: what failed, why, how often it was tried, what to do.
_MESSAGES: dict[str, str] = {
    "missing": "Cannot read {where}: the file does not exist ({status}): check the catalog's asset URLs.",
    "not_raster": "Cannot read {where}: the server's answer is not a raster (an error or login page?): "
                  "check the catalog's asset URLs and access.",
    "corrupt": "Cannot read {where}: the file is corrupt (it cannot be decoded: {detail}): "
               "the copy on the server is damaged; report it to the catalog or retry later.",
    "truncated": "Cannot read {where}: the file is truncated ({detail}) on {tries}: the copy on the server is "
                 "incomplete; retry later or report it to the catalog.",
    "auth": "Cannot read {where}: access refused ({status}) on {tries}, re-signing included: "
            "check pc_key / the catalog's credentials.",
    "refused": "Cannot read {where}: the server refused it ({status}): check the catalog's asset URLs.",
    "transient": "Cannot read {where}: {status} on {tries} within dl_timeout (each HTTP request retried too): "
                 "the server {host} is failing or unreachable; retry later or raise --max-retries.",
}


def _failure_message(what: str, href: str, f: ReadFailure, attempts: int) -> str:
    """One sentence for a failed read (:data:`_MESSAGES`), with the real status and number of attempts."""
    return _MESSAGES[f.kind].format(where=f"{what} from {_redact(href)}", tries=f"{attempts} attempt(s)",
                                    status=_describe(f), detail=f.detail, host=_host(href))


def _host(href: str) -> str:
    return urlparse(href).netloc or "local file"


def _redact(href: str) -> str:
    """Drop query strings (SAS tokens) from hrefs shown to users."""
    return href.split("?", 1)[0]

