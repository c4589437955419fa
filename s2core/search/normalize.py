"""s2core.search.normalize: one set of metadata normalisers for every source of scenes.

STAC items (Planetary Computer, Earth Search, static catalogs) and SAFE products name the same
facts differently; these functions turn each fact into one form (``S2A``, ``33TWM``, an aware
UTC datetime, a :class:`~s2core.model.scene.ViewAngles`), so catalogs, SAFE reading and the
written STAC items agree.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any, Mapping, Optional
from urllib.parse import urljoin, urlparse

import shapely
from shapely.geometry import shape

from s2core.errors import CatalogResponseError
from s2core.model.bands import ALL_BANDS, asset_key_candidates
from s2core.model.radiometry import dn_offset, processing_baseline
from s2core.model.scene import Scene, ViewAngles

#: An MGRS tile inside a product name or id (``…_T33TWM_…``, ``S2A_33TWM_…``).
_TILE_RE = re.compile(r"_T?(\d{1,2}[C-X][A-Z]{2})_")
#: A relative orbit inside a product name (``…_R079_…``).
_ORBIT_RE = re.compile(r"_R(\d{3})_")


def tile_from_name(name: str) -> Optional[str]:
    """The MGRS tile named in a product name or item id, or None."""
    m = _TILE_RE.search(name + "_")
    return m.group(1) if m else None


def orbit_from_name(name: str) -> Optional[int]:
    """The relative orbit named in a product name (``_R079_``), or None."""
    m = _ORBIT_RE.search(name + "_")
    return int(m.group(1)) if m else None


def datatake_id(raw: Any) -> Optional[str]:
    """A datatake id without its processing-baseline suffix (``…_N05.09``), or None."""
    return re.sub(r"_N\d{2}\.\d{2}$", "", str(raw)) if raw else None


def view_angles(props: Mapping[str, Any]) -> ViewAngles:
    """Mean sun/view angles of an item: STAC ``view`` properties (Earth Search), else Planetary
    Computer's ``s2:mean_solar_azimuth`` / ``s2:mean_solar_zenith``."""
    def get(key: str) -> Optional[float]:
        return float(props[key]) if props.get(key) is not None else None

    azimuth, elevation = get("view:sun_azimuth"), get("view:sun_elevation")
    if azimuth is None:
        azimuth = get("s2:mean_solar_azimuth")
    if elevation is None and (zenith := get("s2:mean_solar_zenith")) is not None:
        elevation = 90.0 - zenith
    return ViewAngles(sun_azimuth=azimuth, sun_elevation=elevation, incidence_angle=get("view:incidence_angle"),
                      view_azimuth=get("view:azimuth"))


def parse_datetime(props: Mapping[str, Any]) -> dt.datetime:
    """The item's ``datetime`` (or ``start_datetime``) as an aware UTC datetime."""
    raw = props.get("datetime") or props.get("start_datetime")
    if not raw:
        raise CatalogResponseError("A STAC item has no datetime: the catalog returned invalid STAC.")
    value = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def platform_code(props: Mapping[str, Any], item_id: str) -> str:
    """``S2A``/``S2B``/``S2C``/``S2D`` from the ``platform`` property or the item id; anything else is kept
    as letters, digits and ``-`` only (it becomes part of a folder name)."""
    raw = str(props.get("platform") or "")
    m = re.search(r"2([A-D])", raw, re.I) or re.match(r"S2([A-D])", item_id)
    return f"S2{m.group(1).upper()}" if m else (re.sub(r"[^A-Za-z0-9-]+", "", raw)[:16] or "S2")


def resolve_href(href: str, base: Optional[str]) -> str:
    """``href`` made absolute against ``base`` (the location of the document that holds it)."""
    if not base or urlparse(href).scheme in ("http", "https", "s3", "gs", "az", "file") or href.startswith("/"):
        return href
    if urlparse(base).scheme in ("http", "https"):
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def scene_from_item(item: Mapping[str, Any], base_href: Optional[str] = None) -> Scene:
    """Normalise a raw STAC item dict (PC, Earth Search, or another L2A catalog) to a :class:`Scene`.

    ``base_href`` (the item's own location) resolves relative asset hrefs.
    """
    try:
        props = item["properties"]
        item_id = str(item["id"])
        footprint = shape(item["geometry"]) if item.get("geometry") else shapely.box(*item["bbox"])
        assets = item.get("assets") or {}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CatalogResponseError(f"The catalog returned an item that is not valid STAC ({exc!r}).") from exc
    hrefs: dict[str, str] = {}
    offsets: dict[str, float] = {}
    for band in (*ALL_BANDS, "SCL"):
        for key in asset_key_candidates(band):
            asset = assets.get(key)
            if asset and asset.get("href"):
                hrefs[band] = resolve_href(str(asset["href"]), base_href)
                offsets[band] = 0.0 if band == "SCL" else dn_offset(props, asset)
                break
    tile = str(props.get("s2:mgrs_tile") or props.get("grid:code", "").replace("MGRS-", "") or "")
    if not tile:
        zone, band_, sq = props.get("mgrs:utm_zone"), props.get("mgrs:latitude_band"), props.get("mgrs:grid_square")
        tile = f"{zone}{band_}{sq}" if zone and band_ and sq else ""
    if not tile:
        tile = tile_from_name(item_id) or tile_from_name(str(props.get("s2:product_uri", ""))) or item_id
    orbit = props.get("sat:relative_orbit")
    if orbit is None:
        orbit = orbit_from_name(str(props.get("s2:product_uri") or item_id))
    datatake = datatake_id(props.get("s2:datatake_id"))
    return Scene(
        id=item_id,
        datetime=parse_datetime(props),
        platform=platform_code(props, item_id),
        tile=tile,
        relative_orbit=int(orbit) if orbit is not None else None,
        datatake=datatake,
        footprint=footprint,
        cloud_cover=props.get("eo:cloud_cover"),
        baseline=processing_baseline(props),
        generation_time=props.get("s2:generation_time") or props.get("updated") or props.get("created"),
        hrefs=hrefs,
        offsets=offsets,
        item=item,
        angles=view_angles(props),
    )


