"""s2core.masks.shadow_check: the masks stage's shadow check — shadows only where a cloud can cast them.

``shadow_check="filter"`` (the default): a model or product shadow pixel becomes clear unless it lies
in the corridor (:mod:`s2core.shadows`) of some cloud of the acquisition (model or product cloud,
before dilation, inside the grid; the product's clouds around it, :mod:`s2core.stack.context`) for
cloud heights ``min_cloud_height … max_cloud_height`` under the acquisition's sun. ``off`` is the
reference's behaviour. Without sun angles the check is off for that acquisition, with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from s2core.model.classes import CLOUD, SHADOW
from s2core.model.grid import Grid
from s2core.model.request import MaskOptions
from s2core.model.scene import ViewAngles
from s2core.shadows import SunGeometry, corridor_in_context
from s2core.stack.context import CloudContext

log = logging.getLogger(__name__)


@dataclass
class ShadowCheck:
    """Where shadow is possible (None: no check) and what the manifest records of the check."""

    possible: Optional[np.ndarray]
    record: dict[str, object] = field(default_factory=dict)
    warning: Optional[str] = None


def geometry_of(angles: Optional[ViewAngles]) -> Optional[SunGeometry]:
    """The sun (and view) geometry of an acquisition's mean angles; None without the sun's angles."""
    if angles is None or angles.sun_azimuth is None or angles.sun_zenith is None:
        return None
    geometry = SunGeometry(angles.sun_azimuth, angles.sun_zenith, angles.incidence_angle or 0.0,
                           angles.view_azimuth or 0.0)
    return geometry if geometry.usable else None


def shadow_check(options: MaskOptions, cloud_hit: np.ndarray, shadow_hit: np.ndarray, product_mask: np.ndarray,
                 angles: Optional[ViewAngles], grid: Grid, context: Optional[CloudContext]) -> ShadowCheck:
    """The corridor of the acquisition's clouds on ``grid`` (see the module docstring).

    ``cloud_hit`` / ``shadow_hit``: the models' decisions (valid pixels only), before dilation.
    """
    if options.shadow_check == "off":
        return ShadowCheck(None, {"mode": "off"})
    geometry = geometry_of(angles)
    if geometry is None:
        warning = ("The acquisition has no usable sun angles (azimuth and zenith): the shadow check is off for "
                   "it, so its shadows are not checked against the sun.")
        log.warning("%s", warning)
        return ShadowCheck(None, {"mode": "off", "reason": "no sun angles"}, warning)
    clouds = cloud_hit | (product_mask == CLOUD) if options.use_product_mask else cloud_hit
    possible = corridor_in_context(
        clouds, None if context is None else context.cells, context.factor if context else 1,
        context.offset if context else (0, 0), geometry, grid.resolution_m, options.min_cloud_height,
        options.max_cloud_height, outside=context is not None and not context.complete)
    del clouds
    shadows = shadow_hit | (product_mask == SHADOW) if options.use_product_mask else shadow_hit
    total = int(shadows.sum())
    dropped = int(np.count_nonzero(shadows & ~possible))
    record: dict[str, object] = {
        "mode": "filter", "min_cloud_height": options.min_cloud_height, "max_cloud_height": options.max_cloud_height,
        "sun_azimuth": round(geometry.sun_azimuth, 3), "sun_zenith": round(geometry.sun_zenith, 3),
        "context": "none: beyond the grid counts as possible cloud" if context is None
        else ("product clouds around the AOI" + ("" if context.complete else " (cut at 60 km)")),
        "shadow_pixels": total, "dropped_pixels": dropped,
        "dropped_share": round(dropped / total, 6) if total else 0.0,
    }
    log.info("shadow check: %d of %d shadow pixels have no cloud to cast them", dropped, total)
    return ShadowCheck(possible, record)
