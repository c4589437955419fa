"""s2core.search.catalog: one interface over Planetary Computer, any STAC API and local static catalogs.

Example:
    >>> cat = open_catalog("../shared/data/l2a/mapchete-eo-33TWL-33TWM/catalog.json")  # doctest: +SKIP
    >>> scenes = cat.search(aoi, date(2023, 8, 10), date(2023, 8, 20))                 # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol
from urllib.parse import urlparse

import requests
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from s2core.deadline import run_with_deadline
from s2core.errors import CatalogResponseError, CatalogUnreachable, NoItemsFound, PolicyViolation
from s2core.model.policy import AccessPolicy
from s2core.model.aoi import AOI
from s2core.model.scene import Scene, Signer, no_signing
from s2core.search.normalize import resolve_href, scene_from_item

log = logging.getLogger(__name__)

PC_STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "sentinel-2-l2a"
#: HTTP statuses a search request is retried on (with back-off, honouring Retry-After).
TRANSIENT_HTTP = (408, 425, 429, 500, 502, 503, 504)


# --- signing ----------------------------------------------------------------------------
class PlanetaryComputerSigner:
    """Signs Azure Blob hrefs with a SAS token from the ``planetary-computer`` package.

    Tokens are cached by ``planetary-computer`` and refreshed a minute before they expire;
    since s2core signs right before every read (never at search time), long runs never use
    an expired token. ``force=True`` (after an HTTP 403) drops the cached token first.
    The optional ``pc_key`` is handed to ``planetary-computer`` and never logged.
    """

    def __init__(self, pc_key: Optional[str] = None) -> None:
        import planetary_computer  # lazy: only for Planetary Computer catalogs

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
        from planetary_computer import sas  # lazy: only for Planetary Computer catalogs

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


def finish_search(scenes: list[Scene], what: str, start: dt.date, end: dt.date) -> list[Scene]:
    """Scenes sorted by (time, tile, id); :class:`NoItemsFound` naming ``what`` when there is none."""
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
        deadline: Optional[float] = None,
        policy: AccessPolicy = AccessPolicy(),
    ) -> None:
        self.url = url
        self.collection = collection
        self.sign = signer
        self.timeout = timeout  #: seconds for one HTTP request (connect, then each read)
        self.deadline = deadline or max(timeout, 60.0)  #: seconds for the whole search, pages and retries included
        self.name = name or url
        self.policy = policy

    def _client(self) -> Any:
        retry = Retry(total=3, connect=2, read=2, status=3, backoff_factor=0.5, status_forcelist=TRANSIENT_HTTP,
                      allowed_methods=None, respect_retry_after_header=True, raise_on_status=False)
        io = StacApiIO(timeout=(min(self.timeout, 15.0), self.timeout), max_retries=retry)
        if self.policy.restricted:  # a redirect must not lead a restricted search to another host
            io.session.hooks["response"].append(self._refuse_foreign_redirect)
        try:
            client = Client.open(self.url, stac_io=io, timeout=(min(self.timeout, 15.0), self.timeout))
        except APIError as exc:
            raise _api_error(self.url, exc, "answered with an error", self.policy.restricted) from exc
        except Exception as exc:
            raise _network_error(self.url, exc) from exc
        client.add_conforms_to("ITEM_SEARCH")
        client.add_conforms_to("SORT")
        return client

    def _refuse_foreign_redirect(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.is_redirect:
            target = urlparse(requests.compat.urljoin(response.url, response.headers.get("location", "")))
            if not self.policy.host_allowed(target.hostname or "", self.policy.stac_hosts):
                raise PolicyViolation(
                    f"The STAC API at {urlparse(self.url).hostname} redirects to {target.hostname!r}, which this "
                    "server does not search (S2_ALLOWED_STAC_HOSTS)."
                )

    def search(self, aoi: AOI, start: dt.date, end: dt.date, max_cloud_cover: Optional[float] = None) -> list[Scene]:
        """The scenes of the search, within :attr:`deadline` seconds in all (:class:`CatalogUnreachable` after)."""
        try:
            return run_with_deadline(lambda: self._search(aoi, start, end, max_cloud_cover), self.deadline,
                                     f"search {self.name}")
        except TimeoutError:
            raise CatalogUnreachable(
                f"The STAC API at {self.url} did not answer the search within {self.deadline:g} s (search_timeout): "
                "the server is overloaded or the network is slow; retry later or raise --search-timeout."
            ) from None

    def _search(self, aoi: AOI, start: dt.date, end: dt.date, max_cloud_cover: Optional[float]) -> list[Scene]:
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
            raise _api_error(self.url, exc, "rejected the search", self.policy.restricted) from exc
        except Exception as exc:
            raise _network_error(self.url, exc) from exc
        scenes = []
        for raw in raw_items:
            self_link = next((ln.get("href") for ln in raw.get("links", []) if ln.get("rel") == "self"), None)
            scenes.append(scene_from_item(raw, self_link))
        return finish_search(scenes, f"collection {self.collection!r} of {self.name}", start, end)


def _api_error(url: str, exc: Exception, what: str, quiet: bool = False) -> Exception:
    """The error for a failed API call; ``quiet`` (restricted runs): the HTTP status and host, never the body."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, PolicyViolation):
        return cause
    if isinstance(cause, requests.RequestException) and not isinstance(cause, requests.HTTPError):
        return _network_error(url, cause)
    status = getattr(exc, "status_code", None)
    if quiet:
        return CatalogResponseError(f"The STAC API at {urlparse(url).hostname} {what} (HTTP {status or '?'}).")
    return CatalogResponseError(f"The STAC API at {url} {what}: {str(exc)[:300]}")


def _network_error(url: str, exc: Exception) -> Exception:
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
            path = resolve_href(target, href)
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
        return finish_search(scenes, f"local catalog {self.path.name!r}", start, end)


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
    deadline: Optional[float] = None,
    policy: AccessPolicy = AccessPolicy(),
) -> Catalog:
    """Open a catalog from ``'pc'``, ``'earth-search'``, a STAC API URL or a local path.

    ``timeout`` bounds each HTTP request of a STAC API, ``deadline`` the whole search (default: 60 s or
    ``timeout``, whichever is longer)."""
    key = spec.strip()
    low = key.lower()
    if low in ("pc", "planetary-computer", "planetarycomputer"):
        return StacApiCatalog(
            PC_STAC_URL, collection or DEFAULT_COLLECTION, PlanetaryComputerSigner(pc_key), timeout, "Planetary Computer",
            deadline, policy)
    if low in ("earth-search", "earthsearch", "es"):
        return StacApiCatalog(EARTH_SEARCH_URL, collection or DEFAULT_COLLECTION, no_signing, timeout, "Earth Search",
                              deadline, policy)
    if low.startswith(("http://", "https://")):
        signer: Signer = PlanetaryComputerSigner(pc_key) if "planetarycomputer" in low else no_signing
        return StacApiCatalog(key, collection or DEFAULT_COLLECTION, signer, timeout, deadline=deadline, policy=policy)
    path = Path(key[7:] if low.startswith("file://") else key).expanduser()
    if not path.exists():
        raise CatalogUnreachable(
            f"Catalog {spec!r} is neither 'pc', 'earth-search', an http(s) STAC API URL nor an existing local path."
        )
    return StaticCatalog(path)
