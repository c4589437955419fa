"""s2core.model.radiometry: the processing-baseline reflectance offset of Sentinel-2 L2A digital numbers.

From processing baseline 04.00 (25 January 2022) L2A digital numbers carry an additive
offset: ``reflectance = (DN + BOA_ADD_OFFSET) / 10000`` with ``BOA_ADD_OFFSET = -1000``.
s2core removes it so that outputs of every baseline are ``reflectance × 10000``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import numpy as np

BASELINE_04_OFFSET_DN = -1000.0
_BASELINE_IN_URI = re.compile(r"_N(\d{2})(\d{2})_")


def processing_baseline(properties: Mapping[str, Any]) -> Optional[float]:
    """The processing baseline as a number (``"05.09"`` → 5.09), from the item properties or product id."""
    for key in ("s2:processing_baseline", "sentinel:processing_baseline", "processing:version"):
        value = properties.get(key)
        if value not in (None, ""):
            try:
                return float(str(value))
            except ValueError:
                pass
    for key in ("s2:product_uri", "s2:datatake_id", "s2:granule_id"):
        m = _BASELINE_IN_URI.search(str(properties.get(key, "")) + "_")
        if m:
            return float(f"{m.group(1)}.{m.group(2)}")
    return None


def dn_offset(properties: Mapping[str, Any], asset: Mapping[str, Any] | None = None) -> float:
    """The additive DN offset to apply so that ``DN + offset == reflectance × 10000``.

    Order of evidence:
      1. ``earthsearch:boa_offset_applied`` / ``sentinel:boa_offset_applied`` is true: the
         catalog already harmonised the pixels, the offset is 0 (Earth Search keeps a
         ``raster:bands`` offset of -0.1 on such items, which must then be ignored).
      2. ``raster:bands[0].offset`` / ``scale`` of the asset (e.g. -0.1 / 1e-4 → -1000).
      3. the processing baseline: -1000 from 04.00 on, else 0.
    """
    for flag in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"):
        if properties.get(flag) is True:
            return 0.0
    if asset:
        bands = asset.get("raster:bands") or []
        if bands and isinstance(bands[0], Mapping) and bands[0].get("offset") is not None:
            scale = bands[0].get("scale") or 1e-4
            return float(round(float(bands[0]["offset"]) / float(scale)))
    baseline = processing_baseline(properties)
    if baseline is not None and baseline >= 4.0:
        return BASELINE_04_OFFSET_DN
    return 0.0


_CHUNK = 1 << 22


def to_reflectance_dn(values: np.ndarray, offset: float, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Apply ``offset`` to float DNs (NaN = nodata), or integer DNs (0 = nodata), and return uint16
    ``reflectance × 10000``.

    ``out`` (uint16, same shape) receives the result in place of a new array. Nodata (NaN) becomes 0; every valid pixel is at least 1 (negative or zero
    reflectances are clipped to 1 so that a valid pixel never reads as nodata).
    """
    if out is None:
        out = np.zeros(values.shape, dtype=np.uint16)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    if values.dtype == np.uint16 and float(offset).is_integer() and offset <= 0:  # DNs, 0 = nodata
        # in uint16, no temporaries: min(max(v, 1 - o) + o, v) is 0 for 0 and max(v + o, 1) otherwise
        o = int(offset)
        if o == 0:
            np.copyto(out, values)
            return out
        for i in range(0, flat_in.size, _CHUNK):
            v = flat_in[i:i + _CHUNK]
            o_part = flat_out[i:i + _CHUNK]
            np.maximum(v, np.uint16(1 - o), out=o_part)
            o_part -= np.uint16(-o)
            np.minimum(o_part, v, out=o_part)
        return out
    if np.issubdtype(values.dtype, np.integer) and float(offset).is_integer():  # DNs, 0 = nodata
        for i in range(0, flat_in.size, _CHUNK):
            v = flat_in[i:i + _CHUNK]
            tmp = v.astype(np.int32) + int(offset)
            np.clip(tmp, 1, 65535, out=tmp)
            tmp[v == 0] = 0
            flat_out[i:i + _CHUNK] = tmp
        return out
    for i in range(0, flat_in.size, _CHUNK):  # in chunks: whole-tile temporaries would be gigabytes
        v = flat_in[i:i + _CHUNK]
        tmp = v + np.float32(offset) if v.dtype == np.float32 else (v + offset).astype(np.float32)
        np.rint(tmp, out=tmp)
        np.clip(tmp, 1, 65535, out=tmp)
        tmp[np.isnan(v)] = 0
        flat_out[i:i + _CHUNK] = tmp
    return out


#: Surface or TOA reflectance above this is physically impossible (bright clouds and snow stay near 1).
MAX_PLAUSIBLE_REFLECTANCE = 1.5
#: A band with more than this share of its valid pixels above :data:`MAX_PLAUSIBLE_REFLECTANCE` is corrupt.
MAX_IMPLAUSIBLE_SHARE = 0.10
_SAMPLE = 1 << 20


def implausible_share(dn: np.ndarray) -> float:
    """The share of valid pixels (DN ≠ 0) of a uint16 ``reflectance × 10000`` array whose reflectance is above
    :data:`MAX_PLAUSIBLE_REFLECTANCE`, estimated on an even sample of at most about a million pixels."""
    flat = dn.reshape(-1)
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    valid = np.count_nonzero(sample)
    if not valid:
        return 0.0
    return np.count_nonzero(sample > MAX_PLAUSIBLE_REFLECTANCE * 10000) / valid
