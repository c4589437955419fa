"""s2core.masks: the product mask derived from the Scene Classification Layer (SCL).

Product mask values (uint8):

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

import numpy as np

NODATA = 0
CLEAR = 1
CLOUD = 2
SHADOW = 3
SNOW = 4
DEFECTIVE = 5

MASK_CLASSES: dict[int, str] = {
    NODATA: "nodata", CLEAR: "clear", CLOUD: "cloud", SHADOW: "shadow", SNOW: "snow", DEFECTIVE: "defective",
}

_LUT = np.full(256, CLEAR, dtype=np.uint8)  # invalid codes (12..255) count as unclassified -> clear
_LUT[0] = NODATA
_LUT[1] = DEFECTIVE
_LUT[3] = SHADOW
_LUT[[8, 9, 10]] = CLOUD
_LUT[11] = SNOW


def product_mask_from_scl(scl: np.ndarray) -> np.ndarray:
    """Map an SCL array (uint8) to product mask codes (see module docstring)."""
    return _LUT[np.asarray(scl, dtype=np.uint8)]


def class_fractions(mask: np.ndarray) -> dict[str, float]:
    """Fraction of *valid* pixels in each product mask class (nodata: fraction of all pixels)."""
    counts = np.bincount(mask.ravel(), minlength=len(MASK_CLASSES))
    total = mask.size
    valid = total - counts[NODATA]
    out = {"nodata": float(counts[NODATA] / total) if total else 0.0}
    for code, name in MASK_CLASSES.items():
        if code != NODATA:
            out[name] = float(counts[code] / valid) if valid else 0.0
    return out
