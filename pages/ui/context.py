"""Process-wide resources of the app: settings, the job manager, where layers and browser assets come from."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import requests
import streamlit as st

from pages.ui.server import ASSETS_PATH, TILES_PATH, public_prefix
from s2core.errors import InvalidSetting
from s2core.run.jobs import JobManager
from s2core.settings import Settings, get_settings
from tiles_server.launcher import health


def settings() -> Settings:
    """The settings (:mod:`s2core.settings`; read from the environment on every rerun: cheap, and tests can
    change them). An unusable value stops the page with the message naming the variable."""
    try:
        return get_settings()
    except InvalidSetting as exc:
        st.error(str(exc))
        st.stop()
        raise  # st.stop() raises; this keeps type checkers informed


@st.cache_resource
def job_manager() -> JobManager:
    """One job manager per app process: jobs survive reruns and page switches."""
    return JobManager()


@dataclass(frozen=True)
class TileSource:
    """Where the pages get layers: the tile server mounted in the app's own server (same origin), or the
    one at ``S2_TILES_URL``. ``public`` is the URL prefix the browser uses for tiles."""

    public: str
    external: bool

    def tilejson(self, run_id: str, acq_id: str, layer: str, query: dict[str, Any]) -> dict[str, Any]:
        """A layer's TileJSON (its tile URLs under :attr:`public`); raises ``LayerUnavailable``."""
        path = f"/runs/{run_id}/{acq_id}/{layer}/tilejson.json"
        query = {"format": OVERLAY_FORMAT, **query}
        try:
            if self.external:
                resp = requests.get(self.public + path, params=query, timeout=30)
            else:  # the mounted server, called in process: no socket, and the URLs it writes are ours
                resp = _mounted_client(str(settings().runs_dir.resolve()), self.public).get(path, params=query)
        except requests.RequestException as exc:
            raise LayerUnavailable(f"the tile server at {self.public} did not answer ({type(exc).__name__})") from None
        if resp.status_code != 200:
            detail = resp.json().get("detail") if "json" in resp.headers.get("content-type", "") else resp.text[:200]
            raise LayerUnavailable(f"{layer}: {detail}")
        doc = resp.json()
        if not self.external:
            doc["tiles"] = [t.removeprefix(_CLIENT_ORIGIN) for t in doc["tiles"]]
        return doc


class LayerUnavailable(Exception):
    """A layer the tile server could not give (the message says why, without server paths)."""


#: The image format of the maps' overlay tiles: lossless WebP is 2.6x faster to encode than PNG and a third
#: smaller (every browser the app supports shows it).
OVERLAY_FORMAT = "webp"

#: The origin the in-process client uses; stripped so that tile URLs are path-absolute.
_CLIENT_ORIGIN = "http://app.invalid"


@st.cache_resource(show_spinner=False)
def _mounted_client(root: str, public: str) -> Any:
    """An in-process client of a tile server instance for ``root`` whose URLs start with ``public``."""
    from starlette.testclient import TestClient  # lazy: only pages with maps need it

    from tiles_server.app import ServerSettings, create_app  # lazy: only pages with maps need it

    return TestClient(create_app(ServerSettings(root=Path(root), cors_origins=())), base_url=_CLIENT_ORIGIN,
                      root_path=public + TILES_PATH)


def tiles() -> tuple[Optional[TileSource], Optional[str]]:
    """The tile source of this page view, or None and why not (an unreachable ``S2_TILES_URL``)."""
    s = settings()
    if s.tiles_url:
        url = s.tiles_url.rstrip("/")
        if health(url) is None:
            return None, (f"The tile server at S2_TILES_URL={url} does not answer: start it "
                          "(python -m tiles_server) or unset S2_TILES_URL to use the app's own.")
        return TileSource(url, True), None
    return TileSource(public_prefix(st.context.headers), False), None


def asset_prefix() -> str:
    """The path-absolute URL prefix of the browser assets (Leaflet & plugins) served by the app."""
    return public_prefix(st.context.headers) + ASSETS_PATH


def basemap() -> Optional[tuple[str, str]]:
    """The maps' basemap (XYZ template, attribution) from ``S2_BASEMAP_URL``, or None for ``none``."""
    s = settings()
    url = s.basemap_url.strip()
    return None if url.lower() in ("", "none") else (url, s.basemap_attribution)


def owner_label() -> str:
    """Who this session is, for a run's manifest: the user the authenticating proxy names
    (``S2_USER_HEADER``), else an anonymous label of this browser session."""
    header = settings().user_header
    user = str(st.context.headers.get(header) or "").strip()[:100] if header and st.context.headers else ""
    if user:
        return user
    if "owner_label" not in st.session_state:
        st.session_state["owner_label"] = f"session-{secrets.token_hex(3)}"
    return st.session_state["owner_label"]
