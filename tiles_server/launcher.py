"""tiles_server.launcher: is a tile server answering at a URL (the app's ``S2_TILES_URL``)?

The app mounts the tile server in its own server (``pages/ui/server.py``); a separate one, started
with ``python -m tiles_server``, serves other clients or a deployment that wants it apart.
"""

from __future__ import annotations

from typing import Optional

import requests


def health(url: str, timeout: float = 2.0) -> Optional[dict]:
    """The server's ``/healthz`` document, or None when nothing answers."""
    try:
        resp = requests.get(f"{url.rstrip('/')}/healthz", timeout=timeout)
        return resp.json() if resp.ok else None
    except (requests.RequestException, ValueError):
        return None
