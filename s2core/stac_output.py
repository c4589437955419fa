"""s2core.stac_output: a STAC Item describing one acquisition's outputs (proj, eo, raster extensions)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from shapely.geometry import box, mapping

from s2core.aoi import AOI
from s2core.bands import CENTER_WAVELENGTH_UM, DESCRIPTIONS, EARTH_SEARCH_KEYS
from s2core.grid import Grid, project_geometry
from s2core.masks import MASK_CLASSES
from s2core.selection import Acquisition

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
    """Build the item dict; ``assets`` maps a role to a path relative to the item file."""
    from pyproj import CRS

    footprint = project_geometry(box(*grid.bounds), CRS.from_epsg(4326), src_crs=grid.crs)
    geom = aoi.geometry if aoi.crosses_antimeridian else footprint
    first = acquisition.scenes[0]
    props: dict[str, Any] = {
        "datetime": acquisition.datetime.isoformat().replace("+00:00", "Z"),
        "platform": {"S2A": "sentinel-2a", "S2B": "sentinel-2b", "S2C": "sentinel-2c"}.get(acquisition.platform, acquisition.platform),
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
    props.update(acquisition.sun_angles)
    if props["proj:epsg"] is None:
        props["proj:wkt2"] = grid.crs
    props.update(extra_properties or {})
    item_assets: dict[str, Any] = {}
    if "raster" in assets:
        item_assets["raster"] = {
            "href": assets["raster"],
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": "Reflectance × 10000 (uint16, nodata 0)",
            "roles": ["data", "reflectance"],
            "eo:bands": [
                {"name": b, "common_name": EARTH_SEARCH_KEYS.get(b), "description": DESCRIPTIONS[b],
                 "center_wavelength": CENTER_WAVELENGTH_UM[b]}
                for b in bands
            ],
            "raster:bands": [
                {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": 0, "spatial_resolution": grid.resolution_m}
                for _ in bands
            ],
        }
    if "raster_export" in assets:
        item_assets["raster_export"] = {
            "href": assets["raster_export"],
            "title": f"The raster in the requested output format ({assets['raster_export'].rsplit('.', 1)[-1]})",
            "roles": ["data"],
        }
    if "product_mask" in assets:
        item_assets["product_mask"] = {
            "href": assets["product_mask"],
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": "Product mask from SCL (0 nodata, 1 clear, 2 cloud, 3 shadow, 4 snow, 5 defective)",
            "roles": ["data", "cloud", "cloud-shadow"],
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": grid.resolution_m}],
            "classification:classes": [{"value": k, "name": v} for k, v in MASK_CLASSES.items()],
        }
    if "scl" in assets:
        item_assets["scl"] = {
            "href": assets["scl"],
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": "Scene Classification Layer (SCL), nearest-resampled",
            "roles": ["data", "classification"],
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": grid.resolution_m}],
        }
    cog = "image/tiff; application=geotiff; profile=cloud-optimized"
    for role, title in (("cloud_prob", "Cloud probability × 250 (uint8, 255 nodata)"),
                        ("shadow_prob", "Shadow probability × 250 (uint8, 255 nodata)")):
        if role in assets:
            item_assets[role] = {
                "href": assets[role], "type": cog, "title": title, "roles": ["data", "cloud" if role == "cloud_prob"
                                                                            else "cloud-shadow"],
                "raster:bands": [{"nodata": 255, "data_type": "uint8", "scale": 0.004, "offset": 0,
                                  "spatial_resolution": grid.resolution_m}],
            }
    if "mask" in assets:
        item_assets["mask"] = {
            "href": assets["mask"], "type": cog,
            "title": "Merged mask: models + product (0 nodata, 1 clear, 2 cloud, 3 shadow, 4 snow, 5 defective)",
            "roles": ["data", "cloud", "cloud-shadow"],
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": grid.resolution_m}],
            "classification:classes": [{"value": k, "name": v} for k, v in MASK_CLASSES.items()],
        }
    if "cloud_mask" in assets:
        item_assets["cloud_mask"] = {
            "href": assets["cloud_mask"], "type": cog, "title": "Binary cloud mask (1 cloud or shadow, 0 clear)",
            "roles": ["data", "cloud"],
            "raster:bands": [{"nodata": 255, "data_type": "uint8", "spatial_resolution": grid.resolution_m}],
        }
    for role, href in assets.items():
        item_assets.setdefault(role, {"href": href, "roles": ["data"]})
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": acquisition.id,
        "geometry": mapping(geom),
        "bbox": list(geom.bounds),
        "properties": props,
        "links": [],
        "assets": item_assets,
    }


def _epsg(crs: str) -> int | None:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_epsg()
