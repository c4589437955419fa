"""s2core.read.sources: the pixel size of the source assets (what a model can honestly resolve).

A band stacked onto a 10 m grid from 120 m pixels holds no 10 m detail: the masks stage runs each
model at the coarser of its native resolution and its bands' source pixels, and says when those are far
coarser than what the model was trained on. The pixel size is read from each asset's header (GDAL keeps
it from the read just made); when that fails the band's nominal Sentinel-2 resolution stands in.
"""

from __future__ import annotations

import logging
from typing import Iterable

import rasterio

from s2core.deadline import run_with_deadline
from s2core.model.bands import NATIVE_RESOLUTION
from s2core.model.grid import METRES_PER_DEGREE
from s2core.model.scene import Acquisition, Signer
from s2core.read.reader import GDAL_HTTP_OPTIONS

log = logging.getLogger(__name__)

#: Seconds a header read may take before the nominal resolution stands in.
PROBE_TIMEOUT = 20.0


def source_pixel_size(href: str, sign: Signer) -> float:
    """The pixel size (m) of one asset (degrees turned into metres on a geographic CRS)."""
    env = dict(GDAL_HTTP_OPTIONS) if "://" in href else {}
    with rasterio.Env(**env), rasterio.open(sign(href)) as src:
        size = abs(float(src.transform.a))
        return size * METRES_PER_DEGREE if src.crs is not None and src.crs.is_geographic else size


def source_resolutions(acquisition: Acquisition, bands: Iterable[str], sign: Signer) -> dict[str, float]:
    """Band -> the coarsest source pixel size (m) over the acquisition's scenes."""
    out: dict[str, float] = {}
    for band in bands:
        sizes = []
        for scene in acquisition.scenes:
            href = scene.hrefs.get(band)
            if href is None:
                continue
            try:
                sizes.append(run_with_deadline(lambda h=href: source_pixel_size(h, sign), PROBE_TIMEOUT,
                                               f"read the header of {band}"))
            except Exception as exc:  # noqa: BLE001 - any failure: the nominal size stands in
                log.info("pixel size of %s of %s unknown (%s): taking the nominal %s m", band, scene.id, exc,
                         NATIVE_RESOLUTION.get(band))
                sizes.append(float(NATIVE_RESOLUTION.get(band, 10)))
        if sizes:
            out[band] = max(sizes)
    return out
