"""s2core.masks.merge: model probabilities + product mask → the merged cloud/shadow mask.

Semantics of the reference (FarmVibes.AI ``merge_cloud_masks_simple``), with its defaults:
a pixel is masked when ``cloud_prob > cloud_thr`` (0.3) or ``shadow_prob > shadow_thr`` (0.2)
or the product mask says cloud (or shadow); the result is dilated by a disk of radius 5 px;
optionally, connected masked regions and clear holes smaller than ``min_area`` px are removed
or filled. Unlike the reference, nodata is never called cloud and the result keeps classes:

====  ==========  ==================================================================
code  name        meaning
====  ==========  ==================================================================
0     nodata      no data in the raster
1     clear       none of the below
2     cloud       model cloud, product cloud, their dilation, filled holes
3     shadow      model or product shadow and its dilation, where not cloud
4     snow        product snow/ice, where not cloud or shadow
5     defective   product saturated/defective, where not cloud or shadow
====  ==========  ==================================================================

``mask != clear`` over valid pixels equals the reference's binary mask; :func:`binary_mask`
writes that one (1 masked, 0 clear, 255 nodata).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from s2core.errors import InvalidParameter
from s2core.runfolder.layout import BINARY_NODATA
from s2core.model.classes import CLEAR, CLOUD, NODATA, SHADOW
from s2core.model.decision import REFERENCE_DECISION



@dataclass(frozen=True)
class MergeParams:
    """Thresholds and morphology of the merge (reference names and defaults)."""

    cloud_thr: float = REFERENCE_DECISION.cloud_thr
    shadow_thr: float = REFERENCE_DECISION.shadow_thr
    dilation: int = 5
    min_area: int = 0
    use_product_mask: bool = True

    def __post_init__(self) -> None:
        for name in ("cloud_thr", "shadow_thr"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InvalidParameter(f"{name} must be between 0 and 1 (got {v}).")
        if self.dilation < 0 or self.dilation > 100:
            raise InvalidParameter(f"dilation must be between 0 and 100 px (got {self.dilation}).")
        if self.min_area < 0:
            raise InvalidParameter(f"min_area must be >= 0 px (got {self.min_area}).")


def disk(radius: int) -> np.ndarray:
    """A disk structuring element (``x² + y² <= r²``), uint8, as ``skimage.morphology.disk``."""
    r = int(radius)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk (OpenCV: fast and memory-light on whole tiles)."""
    src = np.ascontiguousarray(mask, dtype=bool)
    if radius <= 0:
        return src.copy()
    out = cv2.dilate(src.view(np.uint8), disk(radius), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


def remove_small_components(masked: np.ndarray, min_area: int) -> np.ndarray:
    """Drop masked regions smaller than ``min_area`` px, then fill clear holes smaller than it (8-connected)."""
    out = masked.astype(bool).copy()
    for value in (True, False):
        target = (out == value).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(target, connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_area)
        small = small[small != 0]  # label 0 is the background of this pass
        if small.size:
            out[np.isin(labels, small)] = not value
    return out


def merge_masks(
    cloud_prob: np.ndarray,
    shadow_prob: np.ndarray,
    product_mask: np.ndarray,
    params: MergeParams = MergeParams(),
    valid: Optional[np.ndarray] = None,
) -> np.ndarray:
    """The merged class mask (uint8, codes in the module docstring).

    ``cloud_prob`` and ``shadow_prob`` are float (NaN or anything where nodata); ``product_mask``
    holds :mod:`s2core.model.classes` codes. ``valid`` marks pixels where the raster has data (default:
    where the product mask is not nodata); where the raster has data but the product mask has
    none, the models alone decide.
    """
    with np.errstate(invalid="ignore"):
        cloud = cloud_prob > params.cloud_thr
        shadow = shadow_prob > params.shadow_thr
    return merge_flags(cloud, shadow, product_mask, params, valid)


def _dilated_class(hit: np.ndarray, code: int, product_mask: np.ndarray, params: MergeParams,
                   valid: np.ndarray, possible: Optional[np.ndarray] = None) -> np.ndarray:
    """Model hits (plus the product's ``code`` pixels when it counts), kept where ``possible``, dilated,
    kept on valid pixels."""
    hit = hit & valid
    if params.use_product_mask:
        hit |= product_mask == code
    if possible is not None:
        hit &= possible
    out = dilate(hit, params.dilation)
    out &= valid
    return out


def merge_flags(
    cloud: np.ndarray,
    shadow: np.ndarray,
    product_mask: np.ndarray,
    params: MergeParams,
    valid: Optional[np.ndarray] = None,
    shadow_possible: Optional[np.ndarray] = None,
) -> np.ndarray:
    """:func:`merge_masks` after the decision: boolean model cloud / shadow maps. ``shadow_possible``
    (the shadow check, :mod:`s2core.masks.shadow_check`): model and product shadows elsewhere become clear."""
    if valid is None:
        valid = product_mask != NODATA
    # full-size temporaries are freed as soon as possible: a 10980² tile is 120 MB per array
    cloud_d = _dilated_class(cloud, CLOUD, product_mask, params, valid)
    del cloud
    shadow_d = _dilated_class(shadow, SHADOW, product_mask, params, valid, shadow_possible)
    del shadow
    shadow_d &= ~cloud_d
    merged = np.where(valid, product_mask, NODATA).astype(np.uint8, copy=False)
    merged[merged == CLOUD] = CLEAR  # product classes are re-decided above
    merged[merged == SHADOW] = CLEAR
    merged[valid & (merged == NODATA)] = CLEAR
    merged[shadow_d] = SHADOW
    del shadow_d
    merged[cloud_d] = CLOUD
    del cloud_d
    if params.min_area > 0:
        masked = (merged == CLOUD) | (merged == SHADOW)
        cleaned = remove_small_components(masked, params.min_area) & valid
        merged[masked & ~cleaned] = CLEAR
        merged[cleaned & ~masked] = CLOUD
    return merged


def binary_mask(merged: np.ndarray) -> np.ndarray:
    """The reference's binary mask: 1 cloud or shadow, 0 otherwise, 255 nodata."""
    out = ((merged == CLOUD) | (merged == SHADOW)).astype(np.uint8)
    out[merged == NODATA] = BINARY_NODATA
    return out


def s2cloudless_mask(
    cloud_prob: np.ndarray, threshold: float = 0.4, average_over: int = 1, dilation_size: int = 1
) -> np.ndarray:
    """s2cloudless's own post-processing: disk-average the probabilities, threshold, dilate.

    Same operations as ``S2PixelCloudDetector.get_mask_from_prob`` (OpenCV filter2D with
    reflected borders, then dilation by a disk), for one (H, W) probability map.
    """
    prob = np.asarray(cloud_prob, dtype=np.float32)
    if average_over and average_over > 0:
        kernel = disk(average_over).astype(np.float32)
        kernel /= kernel.sum()
        mask = (cv2.filter2D(prob, -1, kernel, borderType=cv2.BORDER_REFLECT) > threshold).astype(np.uint8)
    else:
        mask = (prob > threshold).astype(np.uint8)
    if dilation_size and dilation_size > 0:
        mask = cv2.dilate(mask, disk(dilation_size))
    return mask
