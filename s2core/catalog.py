"""s2core.catalog: one interface over Planetary Computer, any STAC API and local static catalogs.

Example:
    >>> cat = open_catalog("../shared/data/l2a/mapchete-eo-33TWL-33TWM/catalog.json")  # doctest: +SKIP
    >>> scenes = cat.search(aoi, date(2023, 8, 10), date(2023, 8, 20))                 # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Protocol
from urllib.parse import urljoin, urlparse

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from s2core.aoi import AOI
from s2core.bands import ALL_BANDS, asset_key_candidates
from s2core.errors import CatalogResponseError, CatalogUnreachable, MissingAsset, NoItemsFound
from s2core.radiometry import dn_offset, processing_baseline

log = logging.getLogger(__name__)

PC_STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "sentinel-2-l2a"
_TILE_RE = re.compile(r"_T?(\d{1,2}[C-X][A-Z]{2})_")
_ORBIT_RE = re.compile(r"_R(\d{3})_")


# --- scenes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """One Sentinel-2 L2A product (a STAC item) reduced to what s2core needs."""

    id: str
    datetime: dt.datetime
    platform: str
    tile: str
    relative_orbit: Optional[int]
    datatake: Optional[str]
    footprint: BaseGeometry
    cloud_cover: Optional[float]
    baseline: Optional[float]
    generation_time: Optional[str]
    hrefs: Mapping[str, str]  # canonical band (B02 … SCL) -> absolute, unsigned href
    offsets: Mapping[str, float]  # canonical band -> DN offset
    item: Mapping[str, Any] = field(repr=False, compare=False, hash=False)
    level: str = "L2A"  # "L1C" for top-of-atmosphere products (SAFE input)

    @property
    def mask_layers(self) -> tuple[str, ...]:
        """The assets that hold the product's own cloud mask: SCL (L2A), MSK_CLASSI or MSK_CLOUDS (L1C)."""
        if self.level == "L2A":
            return ("SCL",)
        return tuple(k for k in ("MSK_CLASSI", "MSK_CLOUDS") if k in self.hrefs)[:1]

    def href(self, band: str) -> str:
        """The asset href of ``band``; :class:`MissingAsset` names the item and what it has."""
        try:
            return self.hrefs[band]
        except KeyError:
            raise MissingAsset(
                f"Item {self.id} has no asset for {band} (it has {', '.join(sorted(self.hrefs)) or 'none'}): "
                "drop that band from 'bands', or use a catalog or product that has it."
            ) from None


def view_angles(props: Mapping[str, Any]) -> dict[str, float]:
    """Mean sun/view angles of an item as STAC ``view`` properties (Earth Search and SAFE items carry
    them as such; Planetary Computer as ``s2:mean_solar_azimuth`` / ``s2:mean_solar_zenith``)."""
    out = {k: float(props[k]) for k in ("view:sun_azimuth", "view:sun_elevation", "view:incidence_angle",
                                        "view:azimuth") if props.get(k) is not None}
    if "view:sun_azimuth" not in out and props.get("s2:mean_solar_azimuth") is not None:
        out["view:sun_azimuth"] = float(props["s2:mean_solar_azimuth"])
    if "view:sun_elevation" not in out and props.get("s2:mean_solar_zenith") is not None:
        out["view:sun_elevation"] = 90.0 - float(props["s2:mean_solar_zenith"])
    return out


def _parse_datetime(props: Mapping[str, Any]) -> dt.datetime:
    raw = props.get("datetime") or props.get("start_datetime")
    if not raw:
        raise CatalogResponseError("A STAC item has no datetime: the catalog returned invalid STAC.")
    value = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _platform(props: Mapping[str, Any], item_id: str) -> str:
    raw = str(props.get("platform") or "")
    m = re.search(r"2([A-D])", raw, re.I) or re.match(r"S2([A-D])", item_id)
    return f"S2{m.group(1).upper()}" if m else (raw or "S2")


def _resolve_href(href: str, base: Optional[str]) -> str:
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
                hrefs[band] = _resolve_href(str(asset["href"]), base_href)
                offsets[band] = 0.0 if band == "SCL" else dn_offset(props, asset)
                break
    tile = str(props.get("s2:mgrs_tile") or props.get("grid:code", "").replace("MGRS-", "") or "")
    if not tile:
        zone, band_, sq = props.get("mgrs:utm_zone"), props.get("mgrs:latitude_band"), props.get("mgrs:grid_square")
        tile = f"{zone}{band_}{sq}" if zone and band_ and sq else ""
    if not tile:
        m = _TILE_RE.search(item_id + "_") or _TILE_RE.search(str(props.get("s2:product_uri", "")))
        tile = m.group(1) if m else item_id
    orbit = props.get("sat:relative_orbit")
    if orbit is None:
        m = _ORBIT_RE.search(str(props.get("s2:product_uri") or item_id) + "_")
        orbit = int(m.group(1)) if m else None
    datatake = props.get("s2:datatake_id")
    if datatake:
        datatake = re.sub(r"_N\d{2}\.\d{2}$", "", str(datatake))
    return Scene(
        id=item_id,
        datetime=_parse_datetime(props),
        platform=_platform(props, item_id),
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
    )


# --- signing --------------------------------------------------------------------------
class Signer(Protocol):
    """Turns an unsigned asset href into one the reader may open. ``force`` drops cached tokens."""

    def __call__(self, href: str, force: bool = False) -> str: ...


def no_signing(href: str, force: bool = False) -> str:
    """The identity signer (public catalogs, local files)."""
    return href


class PlanetaryComputerSigner:
    """Signs Azure Blob hrefs with a SAS token from the ``planetary-computer`` package.

    Tokens are cached by ``planetary-computer`` and refreshed a minute before they expire;
    since s2core signs right before every read (never at search time), long runs never use
    an expired token. ``force=True`` (after an HTTP 403) drops the cached token first.
    The optional ``pc_key`` is handed to ``planetary-computer`` and never logged.
    """

    def __init__(self, pc_key: Optional[str] = None) -> None:
        import planetary_computer

        self._pc = planetary_computer
        self._key = pc_key
        if pc_key:
            planetary_computer.settings.set_subscription_key(pc_key)

    def __reduce__(self) -> tuple[Any, ...]:
        """Re-created on a Dask worker with the same key (which is never logged)."""
        return (PlanetaryComputerSigner, (self._key,))

    def __repr__(self) -> str:
        return f"PlanetaryComputerSigner(key={'given' if self._key else 'none'})"

    def __call__(self, href: str, force: bool = False) -> str:
        from planetary_computer import sas

        if force:
            parsed = urlparse(href)
            if parsed.netloc.endswith(sas.BLOB_STORAGE_DOMAIN):
                account, container = sas.parse_blob_url(parsed)
                settings = self._pc.settings.Settings.get()
                sas.TOKEN_CACHE.pop(f"{settings.sas_url}/{account}/{container}", None)
        try:
            return sas.sign_url(href)
        except Exception as exc:  # requests errors, HTTP errors of the token endpoint
            raise CatalogUnreachable(
                f"Could not get a Planetary Computer SAS token for {urlparse(href).netloc} ({type(exc).__name__}): "
                "check the network, or give a valid pc_key."
            ) from exc


# --- catalogs -------------------------------------------------------------------------
class Catalog(Protocol):
    """What the pipeline needs from a catalog."""

    name: str
    sign: Signer

    def search(self, aoi: AOI, start: dt.date, end: dt.date, max_cloud_cover: Optional[float] = None) -> list[Scene]:
        """Sentinel-2 L2A scenes intersecting ``aoi`` between ``start`` and ``end`` (inclusive)."""
        ...


def _datetime_range(start: dt.date, end: dt.date) -> str:
    return f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z"


def _finish(scenes: list[Scene], what: str, start: dt.date, end: dt.date) -> list[Scene]:
    if not scenes:
        raise NoItemsFound(
            f"No Sentinel-2 scene in {what} intersects the AOI between {start} and {end}: "
            "widen the date range, check the AOI location, or relax max_cloud_cover."
        )
    scenes.sort(key=lambda s: (s.datetime, s.tile, s.id))
    return scenes


class StacApiCatalog:
    """A STAC API (Planetary Computer, Earth Search or any URL) searched with pystac-client."""

    def __init__(
        self,
        url: str,
        collection: str = DEFAULT_COLLECTION,
        signer: Signer = no_signing,
        timeout: float = 60.0,
        name: Optional[str] = None,
    ) -> None:
        self.url = url
        self.collection = collection
        self.sign = signer
        self.timeout = timeout
        self.name = name or url

    def _client(self) -> Any:
        from pystac_client import Client
        from pystac_client.exceptions import APIError

        try:
            client = Client.open(self.url, timeout=self.timeout)
        except APIError as exc:
            raise _api_error(self.url, exc, "answered with an error") from exc
        except Exception as exc:
            raise _network_error(self.url, exc) from exc
        client.add_conforms_to("ITEM_SEARCH")
        client.add_conforms_to("SORT")
        return client

    def search(self, aoi: AOI, start: dt.date, end: dt.date, max_cloud_cover: Optional[float] = None) -> list[Scene]:
        from pystac_client.exceptions import APIError

        client = self._client()
        query = {"eo:cloud_cover": {"lte": max_cloud_cover}} if max_cloud_cover is not None else None
        try:
            search = client.search(
                collections=[self.collection],
                intersects=aoi.to_geojson(),
                datetime=_datetime_range(start, end),
                query=query,
                limit=100,
                max_items=5000,
            )
            raw_items = list(search.items_as_dicts())
        except APIError as exc:
            raise _api_error(self.url, exc, "rejected the search") from exc
        except Exception as exc:
            raise _network_error(self.url, exc) from exc
        scenes = []
        for raw in raw_items:
            self_link = next((ln.get("href") for ln in raw.get("links", []) if ln.get("rel") == "self"), None)
            scenes.append(scene_from_item(raw, self_link))
        return _finish(scenes, f"collection {self.collection!r} of {self.name}", start, end)


def _api_error(url: str, exc: Exception, what: str) -> Exception:
    import requests

    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, requests.RequestException) and not isinstance(cause, requests.HTTPError):
        return _network_error(url, cause)
    return CatalogResponseError(f"The STAC API at {url} {what}: {str(exc)[:300]}")


def _network_error(url: str, exc: Exception) -> Exception:
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return CatalogUnreachable(
            f"Cannot reach the STAC API at {url} ({type(exc).__name__}): check the URL and your network, "
            "or use a local catalog path."
        )
    if isinstance(exc, (json.JSONDecodeError, ValueError, KeyError, TypeError)):
        return CatalogResponseError(
            f"The server at {url} did not answer with STAC JSON ({type(exc).__name__}): check that the URL is a STAC API root."
        )
    return CatalogUnreachable(f"Cannot use the STAC API at {url}: {type(exc).__name__}: {str(exc)[:200]}")


class StaticCatalog:
    """A local static STAC catalog (``catalog.json``/``collection.json``), an ItemCollection JSON
    or a folder of item JSON files, filtered in memory by AOI and dates."""

    def __init__(self, path: str | Path, name: Optional[str] = None) -> None:
        self.path = Path(path)
        self.sign: Signer = no_signing
        self.name = name or str(self.path)
        if not self.path.exists():
            raise CatalogUnreachable(f"Local catalog {str(self.path)!r} does not exist: check the path.")

    def _items(self) -> Iterable[tuple[dict[str, Any], str]]:
        if self.path.is_dir():
            for p in sorted(self.path.rglob("*.json")):
                doc = _load_json(p)
                if doc.get("type") == "Feature":
                    yield doc, str(p)
            return
        doc = _load_json(self.path)
        kind = doc.get("type")
        if kind == "FeatureCollection":
            for feat in doc.get("features", []):
                yield feat, str(self.path)
        elif kind == "Feature":
            yield doc, str(self.path)
        elif kind in ("Catalog", "Collection"):
            yield from self._walk(doc, str(self.path), seen=set())
        else:
            raise CatalogResponseError(
                f"{self.path.name} is not a STAC Catalog, Collection, Item or ItemCollection (type={kind!r})."
            )

    def _walk(self, doc: dict[str, Any], href: str, seen: set[str]) -> Iterable[tuple[dict[str, Any], str]]:
        seen.add(os.path.abspath(href))
        for link in doc.get("links", []):
            rel, target = link.get("rel"), link.get("href")
            if rel not in ("child", "item") or not target:
                continue
            path = _resolve_href(target, href)
            if os.path.abspath(path) in seen:
                continue
            child = _load_json(Path(path))
            if rel == "item":
                yield child, path
            else:
                yield from self._walk(child, path, seen)

    def search(self, aoi: AOI, start: dt.date, end: dt.date, max_cloud_cover: Optional[float] = None) -> list[Scene]:
        scenes = []
        for raw, href in self._items():
            scene = scene_from_item(raw, href)
            day = scene.datetime.date()
            if not (start <= day <= end):
                continue
            if not scene.footprint.intersects(aoi.geometry):
                continue
            if max_cloud_cover is not None and scene.cloud_cover is not None and scene.cloud_cover > max_cloud_cover:
                continue
            scenes.append(scene)
        return _finish(scenes, f"local catalog {self.path.name!r}", start, end)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise CatalogUnreachable(f"Catalog file {str(path)!r} is missing: the local catalog is incomplete.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogResponseError(f"Catalog file {str(path)!r} is not valid JSON ({exc}).") from exc
    if not isinstance(doc, dict):
        raise CatalogResponseError(f"Catalog file {str(path)!r} is not a STAC object.")
    return doc


def open_catalog(
    spec: str,
    *,
    collection: Optional[str] = None,
    pc_key: Optional[str] = None,
    timeout: float = 60.0,
) -> Catalog:
    """Open a catalog from ``'pc'``, ``'earth-search'``, a STAC API URL or a local path."""
    key = spec.strip()
    low = key.lower()
    if low in ("pc", "planetary-computer", "planetarycomputer"):
        return StacApiCatalog(
            PC_STAC_URL, collection or DEFAULT_COLLECTION, PlanetaryComputerSigner(pc_key), timeout, "Planetary Computer"
        )
    if low in ("earth-search", "earthsearch", "es"):
        return StacApiCatalog(EARTH_SEARCH_URL, collection or DEFAULT_COLLECTION, no_signing, timeout, "Earth Search")
    if low.startswith(("http://", "https://")):
        signer: Signer = PlanetaryComputerSigner(pc_key) if "planetarycomputer" in low else no_signing
        return StacApiCatalog(key, collection or DEFAULT_COLLECTION, signer, timeout)
    path = Path(key[7:] if low.startswith("file://") else key).expanduser()
    if not path.exists():
        raise CatalogUnreachable(
            f"Catalog {spec!r} is neither 'pc', 'earth-search', an http(s) STAC API URL nor an existing local path."
        )
    return StaticCatalog(path)
