"""s2core.model.classes: the class tables — SCL codes and the product/merged mask codes, one table each.

Product mask values (uint8), also used by the merged ``mask.tif``:

====  ==========  =========================================
code  name        SCL classes
====  ==========  =========================================
0     nodata      0 (no data)
1     clear       2, 4, 5, 6, 7 and invalid codes (> 11)
2     cloud       8 (medium), 9 (high probability), 10 (thin cirrus)
3     shadow      3 (cloud shadow)
4     snow        11 (snow / ice)
5     defective   1 (saturated or defective)
====  ==========  =========================================
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

# --- Scene Classification Layer (SCL) of L2A products ------------------------------------
SCL_NODATA = 0
SCL_SATURATED = 1
SCL_DARK = 2
SCL_SHADOW = 3
SCL_VEGETATION = 4
SCL_BARE = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_CIRRUS = 10
SCL_SNOW = 11

#: SCL code -> name (ESA's names).
SCL_NAMES: Mapping[int, str] = {
    SCL_NODATA: "no data", SCL_SATURATED: "saturated or defective", SCL_DARK: "dark area", SCL_SHADOW: "cloud shadow",
    SCL_VEGETATION: "vegetation", SCL_BARE: "bare soil", SCL_WATER: "water", SCL_UNCLASSIFIED: "unclassified",
    SCL_CLOUD_MEDIUM: "cloud medium probability", SCL_CLOUD_HIGH: "cloud high probability", SCL_CIRRUS: "thin cirrus",
    SCL_SNOW: "snow or ice",
}

# --- product / merged mask codes ---------------------------------------------------------
NODATA = 0
CLEAR = 1
CLOUD = 2
SHADOW = 3
SNOW = 4
DEFECTIVE = 5

#: Mask code -> name.
MASK_CLASSES: dict[int, str] = {
    NODATA: "nodata", CLEAR: "clear", CLOUD: "cloud", SHADOW: "shadow", SNOW: "snow", DEFECTIVE: "defective",
}

#: SCL code -> mask code (invalid codes 12..255 count as unclassified, so clear).
SCL_TO_MASK: Mapping[int, int] = {
    SCL_NODATA: NODATA, SCL_SATURATED: DEFECTIVE, SCL_DARK: CLEAR, SCL_SHADOW: SHADOW, SCL_VEGETATION: CLEAR,
    SCL_BARE: CLEAR, SCL_WATER: CLEAR, SCL_UNCLASSIFIED: CLEAR, SCL_CLOUD_MEDIUM: CLOUD, SCL_CLOUD_HIGH: CLOUD,
    SCL_CIRRUS: CLOUD, SCL_SNOW: SNOW,
}

_LUT = np.full(256, CLEAR, dtype=np.uint8)
for _scl, _code in SCL_TO_MASK.items():
    _LUT[_scl] = _code


def product_mask_from_scl(scl: np.ndarray) -> np.ndarray:
    """Map an SCL array (uint8) to mask codes (:data:`SCL_TO_MASK`)."""
    return _LUT[np.asarray(scl, dtype=np.uint8)]


def class_fractions(mask: np.ndarray, within: Optional[np.ndarray] = None) -> dict[str, float]:
    """Fraction of *valid* pixels in each mask class (nodata: fraction of all pixels).

    ``within`` (bool, the mask's shape) limits the count to those pixels: the AOI's, so that the figures
    are the AOI's and not its bounding box's (:func:`s2core.model.grid.aoi_pixels`).
    """
    counts = np.zeros(256, dtype=np.int64)
    total = 0
    step = max(1, (1 << 24) // max(1, mask.shape[-1]))  # rows per chunk: bounded temporaries
    for r0 in range(0, mask.shape[0], step):
        part = mask[r0:r0 + step]
        inside = None if within is None else within[r0:r0 + step]
        total += part.size if inside is None else int(np.count_nonzero(inside))
        for code in MASK_CLASSES:  # a comparison per class: 2.5x faster than bincount's widening to int64
            hit = part == code
            if inside is not None:
                hit &= inside
            counts[code] += np.count_nonzero(hit)
    valid = total - counts[NODATA]
    out = {"nodata": float(counts[NODATA] / total) if total else 0.0}
    for code, name in MASK_CLASSES.items():
        if code != NODATA:
            out[name] = float(counts[code] / valid) if valid else 0.0
    return out
