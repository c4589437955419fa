"""pages.ui.server: the app's one server — Streamlit, and on the same origin the tile server under
``/tiles`` and the browser assets (Leaflet & plugins, ``pages/ui/static``) under ``/assets``.

``streamlit run app.py`` finds ``app = st.App(...)`` in ``app.py`` and serves these routes beside the
pages: one port, one origin, so overlays work from any computer that can open the app, over HTTPS,
and behind a reverse proxy with a path prefix. Browser-facing URLs are path-absolute
(``/tiles/…``, ``/assets/…``), prefixed by ``server.baseUrlPath`` and by the ``X-Forwarded-Prefix``
header of a proxy that strips its prefix (:func:`public_prefix`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from s2core.settings import Settings
from tiles_server.proxy import forwarded_prefix

#: Where the tile server and the browser assets are mounted (below the base URL path).
TILES_PATH = "/tiles"
ASSETS_PATH = "/assets"
STATIC = Path(__file__).resolve().with_name("static")


def base_path() -> str:
    """Streamlit's ``server.baseUrlPath`` as ``/path`` (empty when unset)."""
    from streamlit import config  # lazy: read when the server is built and per page run

    value = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{value}" if value else ""


def public_prefix(headers: Optional[Mapping[str, str]] = None) -> str:
    """The path under which the browser reaches this server's routes: forwarded prefix + base URL path."""
    return forwarded_prefix(headers) + base_path()


def navigation_only() -> None:
    """Tell Streamlit that this app's pages come from ``st.navigation`` only.

    Streamlit takes a ``pages/`` folder beside the main script for its older multipage mode until a first
    ``st.navigation`` call says otherwise. Here ``pages/`` is the app's UI package, so the first session after a
    start ran that mode first, did not know ``/Compare``, and said "Page not found" before showing the page. This
    sets, once at start-up, the flag that ``st.navigation`` sets on its first call."""
    from streamlit.runtime.pages_manager import PagesManager  # lazy: the server process only

    PagesManager.uses_pages_directory = False


def routes(settings: Settings) -> list[BaseRoute]:
    """The routes served beside Streamlit's: the tile server and the static assets."""
    from tiles_server.app import ServerSettings, create_app  # lazy: only the server process mounts it

    base = base_path()
    tiles = create_app(ServerSettings(root=settings.runs_dir.resolve(), cors_origins=()))
    return [Mount(base + TILES_PATH, app=tiles, name="tiles"),
            Mount(base + ASSETS_PATH, app=StaticFiles(directory=STATIC), name="assets")]
