"""tiles_server.proxy: what a reverse proxy tells the server about the URL the browser used.

A proxy that strips its path prefix (``location /s2/ { proxy_pass http://app/; }``) says which prefix
it stripped in ``X-Forwarded-Prefix``; URLs handed back to clients (TileJSON's tile template, the app's
overlays) must carry it again. The value is a path of plain segments only, anything else is ignored, so a
hostile header cannot smuggle a host, a scheme or markup into a URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Optional

#: A forwarded prefix is a path: letters, digits, ``/ _ . -`` only (anything else is ignored).
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9_.-]+)*")


def forwarded_prefix(headers: Optional[Mapping[str, str]]) -> str:
    """The ``X-Forwarded-Prefix`` a reverse proxy sends when it strips its path prefix (``/s2``), or ``""``."""
    if not headers:
        return ""
    value = str(headers.get("X-Forwarded-Prefix") or headers.get("x-forwarded-prefix") or "").strip().rstrip("/")
    return value if value and _PREFIX_RE.fullmatch(value) and ".." not in value.split("/") else ""
