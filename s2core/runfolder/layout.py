"""s2core.runfolder.layout: the files of an acquisition folder — one table of output roles.

A run folder holds ``manifest.json`` and one folder per acquisition; each file of that folder
plays a *role* (``raster``, ``mask`` …). The table below is the one place that says, for each
role, its file name, data type, nodata value, scale and STAC description: writers, the STAC
items, the tile server and the app read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from s2core.model.classes import MASK_CLASSES

#: Probabilities are stored as uint8: value = round(probability × PROB_SCALE); PROB_NODATA where no data.
PROB_SCALE = 250.0
PROB_NODATA = 255
#: The binary cloud mask (the reference's ``cloud_mask``): 1 cloud or shadow, 0 clear, BINARY_NODATA no data.
BINARY_NODATA = 255
#: Reflectance DNs: reflectance = DN × REFLECTANCE_SCALE (uint16, 0 = no data, offsets removed).
REFLECTANCE_SCALE = 1e-4

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


@dataclass(frozen=True)
class OutputRole:
    """One kind of file in an acquisition folder."""

    name: str  #: the key in the manifest's ``outputs`` and the STAC item's ``assets``
    file: str  #: file name inside the acquisition folder
    title: str
    stac_roles: tuple[str, ...]
    dtype: Optional[str] = None  #: raster data type (None: not a raster of ours)
    nodata: Optional[int] = None
    scale: Optional[float] = None  #: physical value = DN × scale
    classes: bool = False  #: values are :data:`~s2core.model.classes.MASK_CLASSES` codes
    cog: bool = True  #: a Cloud-Optimized GeoTIFF

    def stac_asset(self, href: str, resolution_m: float, count: int = 1) -> dict[str, Any]:
        """The STAC asset of this role (``raster:bands`` repeated ``count`` times)."""
        asset: dict[str, Any] = {"href": href}
        if self.cog:
            asset["type"] = COG_MEDIA_TYPE
        asset["title"] = self.title
        asset["roles"] = list(self.stac_roles)
        if self.dtype is not None:
            band: dict[str, Any] = {"nodata": self.nodata, "data_type": self.dtype}
            if self.scale is not None:
                band.update(scale=self.scale, offset=0)
            band["spatial_resolution"] = resolution_m
            asset["raster:bands"] = [dict(band) for _ in range(count)]
        if self.classes:
            asset["classification:classes"] = [{"value": k, "name": v} for k, v in MASK_CLASSES.items()]
        return asset


_CODES = "0 nodata, 1 clear, 2 cloud, 3 shadow, 4 snow, 5 defective"

RASTER = OutputRole("raster", "raster.tif", "Reflectance × 10000 (uint16, nodata 0)", ("data", "reflectance"),
                    dtype="uint16", nodata=0, scale=REFLECTANCE_SCALE)
PRODUCT_MASK = OutputRole("product_mask", "product_mask.tif", f"Product mask from SCL ({_CODES})",
                          ("data", "cloud", "cloud-shadow"), dtype="uint8", nodata=0, classes=True)
SCL = OutputRole("scl", "scl.tif", "Scene Classification Layer (SCL), nearest-resampled", ("data", "classification"),
                 dtype="uint8", nodata=0)
CLOUD_PROB = OutputRole("cloud_prob", "cloud_prob.tif", f"Cloud probability × {PROB_SCALE:g} (uint8, {PROB_NODATA} nodata)",
                        ("data", "cloud"), dtype="uint8", nodata=PROB_NODATA, scale=1.0 / PROB_SCALE)
SHADOW_PROB = OutputRole("shadow_prob", "shadow_prob.tif",
                         f"Shadow probability × {PROB_SCALE:g} (uint8, {PROB_NODATA} nodata)", ("data", "cloud-shadow"),
                         dtype="uint8", nodata=PROB_NODATA, scale=1.0 / PROB_SCALE)
MASK = OutputRole("mask", "mask.tif", f"Merged mask: models + product ({_CODES})", ("data", "cloud", "cloud-shadow"),
                  dtype="uint8", nodata=0, classes=True)
CLOUD_MASK = OutputRole("cloud_mask", "cloud_mask.tif", "Binary cloud mask (1 cloud or shadow, 0 clear)",
                        ("data", "cloud"), dtype="uint8", nodata=BINARY_NODATA)
ITEM = OutputRole("item", "item.json", "STAC Item of the acquisition", ("metadata",), cog=False)

#: role name -> role, in the order the files are written
ROLES: dict[str, OutputRole] = {r.name: r for r in (RASTER, PRODUCT_MASK, SCL, CLOUD_PROB, SHADOW_PROB, MASK,
                                                    CLOUD_MASK, ITEM)}
#: the raster copied into another GDAL format (``raster.<ext>``, see :mod:`s2core.write.formats`)
RASTER_EXPORT = "raster_export"


def raster_valid(bands: np.ndarray) -> np.ndarray:
    """Where a ``raster.tif`` stack (bands first, or rows of it) has data: a pixel has data in every band or
    in none (stacking makes it so), so the first band decides."""
    return bands[0] != RASTER.nodata


def export_asset(href: str) -> dict[str, Any]:
    """The STAC asset of the raster copied into the requested output format."""
    return {"href": href, "title": f"The raster in the requested output format ({href.rsplit('.', 1)[-1]})",
            "roles": ["data"]}
