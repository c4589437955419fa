"""s2core.read.netstats: bytes downloaded by GDAL's network file systems (``/vsicurl/``) in this process.

rasterio does not expose GDAL's ``VSINetworkStats*`` API, so it is called through ctypes on
the GDAL library rasterio itself loaded. When that library cannot be found the figures
are ``None`` (never wrong numbers).
"""

from __future__ import annotations

import ctypes
import glob
import json
import logging
import os
from functools import lru_cache
from typing import Any, Optional

import rasterio

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _gdal() -> Optional[ctypes.CDLL]:
    here = os.path.dirname(rasterio.__file__)
    candidates = glob.glob(os.path.join(here, os.pardir, "rasterio.libs", "libgdal*.so*"))
    candidates += glob.glob(os.path.join(here, ".dylibs", "libgdal*.dylib"))
    names = candidates or ["libgdal.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            lib.VSINetworkStatsGetAsSerializedJSON.restype = ctypes.c_void_p
            lib.VSINetworkStatsGetAsSerializedJSON.argtypes = [ctypes.c_void_p]
            lib.VSIFree.argtypes = [ctypes.c_void_p]
            lib.CPLSetConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            lib.CPLSetConfigOption(b"CPL_VSIL_NETWORK_STATS_ENABLED", b"YES")
            return lib
        except (OSError, AttributeError):
            continue
    log.debug("GDAL network statistics unavailable")
    return None


def _stats() -> Optional[dict[str, Any]]:
    lib = _gdal()
    if lib is None:
        return None
    ptr = lib.VSINetworkStatsGetAsSerializedJSON(None)
    if not ptr:
        return None
    try:
        return json.loads(ctypes.string_at(ptr).decode("utf-8"))
    finally:
        lib.VSIFree(ptr)


def enable() -> None:
    """Turn GDAL's network statistics on (idempotent)."""
    _gdal()


def downloaded_bytes() -> Optional[int]:
    """Total bytes GDAL downloaded over HTTP in this process so far (``None`` if unknown)."""
    stats = _stats()
    if stats is None:
        return None
    return int(stats.get("methods", {}).get("GET", {}).get("downloaded_bytes", 0))


def request_count() -> Optional[int]:
    """Total HTTP GET requests GDAL made in this process so far (``None`` if unknown)."""
    stats = _stats()
    if stats is None:
        return None
    return int(stats.get("methods", {}).get("GET", {}).get("count", 0))
