"""s2core.runfolder.stac_items: a STAC Item describing one acquisition's outputs (proj, eo, raster extensions)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pystac
from pyproj import CRS
from shapely.geometry import box, mapping

from s2core.model.aoi import AOI
from s2core.model.bands import CENTER_WAVELENGTH_UM, DESCRIPTIONS, EARTH_SEARCH_KEYS
from s2core.model.grid import Grid, project_geometry
from s2core.runfolder.layout import RASTER, RASTER_EXPORT, ROLES, export_asset
from s2core.model.scene import Acquisition, stac_platform

STAC_VERSION = "1.0.0"
EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
]


def acquisition_item(
    acquisition: Acquisition,
    grid: Grid,
    aoi: AOI,
    bands: Sequence[str],
    assets: Mapping[str, str],
    extra_properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The STAC Item (built with pystac) of one acquisition's outputs; ``assets`` maps a role to a path
    relative to the item file."""
    footprint = project_geometry(box(*grid.bounds), CRS.from_epsg(4326), src_crs=grid.crs)
    geom = aoi.geometry if aoi.crosses_antimeridian else footprint
    first = acquisition.scenes[0]
    props: dict[str, Any] = {
        "datetime": acquisition.iso_datetime,
        "platform": stac_platform(acquisition.platform),
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "sat:relative_orbit": acquisition.relative_orbit,
        "s2:mgrs_tiles": acquisition.tiles,
        "s2:source_items": [s.id for s in acquisition.scenes],
        "s2:processing_baselines": sorted({f"{s.baseline:05.2f}" for s in acquisition.scenes if s.baseline is not None}),
        "gsd": grid.resolution_m,
        "proj:epsg": _epsg(grid.crs),
        "proj:shape": [grid.height, grid.width],
        "proj:transform": list(grid.transform)[:6],
        "proj:bbox": list(grid.bounds),
    }
    if first.cloud_cover is not None:
        props["eo:cloud_cover"] = first.cloud_cover
    props.update(acquisition.angles.stac_properties())
    if props["proj:epsg"] is None:
        props["proj:wkt2"] = grid.crs
    props.update(extra_properties or {})
    item_assets: dict[str, Any] = {}
    for role, href in assets.items():
        if role == RASTER.name:
            item_assets[role] = RASTER.stac_asset(href, grid.resolution_m, len(bands))
            item_assets[role]["eo:bands"] = [
                {"name": b, "common_name": EARTH_SEARCH_KEYS.get(b), "description": DESCRIPTIONS[b],
                 "center_wavelength": CENTER_WAVELENGTH_UM[b]}
                for b in bands
            ]
        elif role == RASTER_EXPORT:
            item_assets[role] = export_asset(href)
        elif role in ROLES:
            item_assets[role] = ROLES[role].stac_asset(href, grid.resolution_m)
        else:
            item_assets[role] = {"href": href, "roles": ["data"]}
    item = pystac.Item(id=acquisition.id, geometry=mapping(geom), bbox=list(geom.bounds),
                       datetime=acquisition.datetime, properties=props, stac_extensions=list(EXTENSIONS))
    for role, asset in item_assets.items():
        item.add_asset(role, pystac.Asset.from_dict(asset))
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    doc["stac_version"] = STAC_VERSION  # the extension schemas above are those of STAC 1.0
    doc["properties"]["datetime"] = acquisition.iso_datetime  # as the source items write it
    return doc


def _epsg(crs: str) -> int | None:
    return CRS.from_user_input(crs).to_epsg()
