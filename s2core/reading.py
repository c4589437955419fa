"""s2core.reading: windowed reads of one asset onto the output grid, bounded in time, with retries.

GDAL's warper reads only the source blocks that intersect the output grid (plus the
resampling kernel's margin) through HTTP range requests (``/vsicurl/``), so a field-sized
AOI never downloads a whole 10980² tile.

``dl_timeout`` bounds the *whole* read of one asset, retries included: every HTTP request
gets ``GDAL_HTTP_TIMEOUT`` = the time left, and the caller stops waiting at the deadline.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.warp import reproject

from s2core.catalog import Signer, no_signing
from s2core.errors import AssetReadError, AssetTimeout
from s2core.grid import Grid
from s2core.resampling import downsample, downsample_flags

log = logging.getLogger(__name__)

#: GDAL options for cloud-native reads (set per read, thread-locally, via rasterio.Env).
GDAL_HTTP_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_MAX_RETRY": "0",  # s2core retries itself, within the deadline
    "CPL_VSIL_CURL_USE_HEAD": "NO",
    "VSI_CACHE": "TRUE",
    "CPL_VSIL_NETWORK_STATS_ENABLED": "YES",
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


#: GDAL's closest kernels, used when the grids do not line up (other CRS, non-integer ratio).
GDAL_DOWNSAMPLING = {"first": Resampling.nearest, "min": Resampling.min, "max": Resampling.max,
                     "mean": Resampling.average, "median": Resampling.med}
GDAL_FLAG_DOWNSAMPLING = {"first": Resampling.nearest, "flag_and": Resampling.nearest,
                          "flag_or": Resampling.nearest, "flag_median_and": Resampling.mode,
                          "flag_median_or": Resampling.mode}


def _classify(exc: Exception) -> str:
    msg = str(exc)
    if "403" in msg or "401" in msg or "AuthenticationFailed" in msg or "Server failed to authenticate" in msg:
        return "auth"
    if "404" in msg or "No such file" in msg or "does not exist" in msg:
        return "missing"
    if "not recognized as" in msg or "not a supported file format" in msg or "TIFFReadDirectory" in msg:
        return "corrupt"
    return "transient"


def _run_with_deadline(fn: Callable[[], Any], seconds: float, name: str) -> Any:
    """Run ``fn`` in a daemon thread and give up waiting after ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["value"]


def _warp(href: str, grid: Grid, resampling: str, is_class: bool, http_timeout: float,
          downsampling: str = "mean", flag_downsampling: str = "first", band: int = 1,
          zero_is_data: bool = False, as_dn: bool = False) -> np.ndarray:
    # Remote: no directory listing (sidecar probing costs requests). Local: sidecars such
    # as .aux.xml may carry the georeferencing, so GDAL may look for them.
    env = dict(GDAL_HTTP_OPTIONS) if "://" in href else {"CPL_VSIL_NETWORK_STATS_ENABLED": "YES",
                                                         "GDAL_NUM_THREADS": "ALL_CPUS"}  # JPEG2000 tiles in parallel
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
                native = _reproject(src, fine, src_nodata, is_class, Resampling.nearest, band)
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


def _alignment(src: Any, grid: Grid) -> Optional[tuple[int, int, int]]:
    """``(factor, col, row)`` when the grid's pixels are whole blocks of ``factor`` × ``factor`` asset
    pixels in one CRS (north-up, square), the grid's corner at asset pixel ``(col, row)``; else None."""
    try:
        if not src.crs or src.crs != grid.rio_crs:
            return None
    except Exception:  # noqa: BLE001
        return None
    st, gt = src.transform, grid.transform
    if st.b or st.d or gt.b or gt.d or st.e != -st.a or gt.e != -gt.a:
        return None
    ratio = gt.a / st.a
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-6:
        return None
    dx, dy = (gt.c - st.c) / st.a, (gt.f - st.f) / st.e
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return None
    return factor, int(round(dx)), int(round(dy))


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
) -> np.ndarray:
    """Read band ``band`` of one asset onto ``grid``.

    ``zero_is_data``: a class raster whose 0 is a value, not nodata (binary flag masks such as
    L1C ``MSK_CLASSI``); pixels outside it still come back as 0.
    ``as_dn``: a uint16 asset whose nodata is 0 may come back as uint16 with 0 = nodata (GDAL
    rounds to the nearest DN) when no block aggregation is involved: half the memory.

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
    last: Optional[Exception] = None
    for attempt in range(policy.max_retries + 1):
        remaining = policy.timeout - (time.monotonic() - start)
        if remaining <= 0:
            break
        signed = sign(href, force=force_sign)
        try:
            return _run_with_deadline(
                lambda: _warp(signed, grid, resampling, is_class, remaining, downsampling, flag_downsampling, band,
                              zero_is_data, as_dn),
                remaining, f"read {what}"
            )
        except TimeoutError:
            raise AssetTimeout(
                f"Reading {what} took longer than dl_timeout={policy.timeout:g} s (server {_host(href)} too slow "
                "or not answering): raise dl_timeout, or retry later."
            ) from None
        except AssetReadError:
            raise
        except (RasterioIOError, RasterioError, OSError) as exc:
            kind = _classify(exc)
            last = exc
            if kind in ("missing", "corrupt"):
                raise AssetReadError(
                    f"Cannot read {what} from {_redact(href)}: "
                    + ("the file does not exist (404)" if kind == "missing" else "the file is corrupt or not a raster")
                    + f" ({_short(exc)})."
                ) from exc
            force_sign = kind == "auth"
            if attempt < policy.max_retries:
                delay = min(policy.backoff * (2**attempt) * (0.5 + random.random()), max(0.0, remaining - 0.5))
                log.warning("read %s failed (%s), retry %d/%d in %.1fs", what, _short(exc), attempt + 1, policy.max_retries, delay)
                if delay > 0:
                    time.sleep(delay)
    if last is None:
        raise AssetTimeout(f"Reading {what} took longer than dl_timeout={policy.timeout:g} s: raise dl_timeout.")
    raise AssetReadError(
        f"Cannot read {what} from {_redact(href)} after {policy.max_retries + 1} attempts ({_short(last)}): "
        "check the network or the catalog's asset URLs."
    ) from last


def _host(href: str) -> str:
    from urllib.parse import urlparse

    return urlparse(href).netloc or "local file"


def _redact(href: str) -> str:
    """Drop query strings (SAS tokens) from hrefs shown to users."""
    return href.split("?", 1)[0]


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    if "?" in text:  # signed URLs inside GDAL messages
        import re

        text = re.sub(r"\?[^\s'\"]*", "?…", text)
    return text[:200]
