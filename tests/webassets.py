"""Leaflet and its plugins from the npm registry, served to the browser in place of public CDNs.

The map pages load Leaflet, Leaflet.draw, jQuery, Bootstrap and leaflet-side-by-side from CDNs,
which tests cannot reach. :func:`fetch_packages` gets the same packages with ``npm pack`` (the npm
registry is reachable; only tarballs, no install scripts) into ``tests/.webassets``;
:class:`CdnStand` answers a browser request for a CDN URL with the file from those tarballs.
Cosmetic extras (icon fonts, marker CSS) get an empty body of the right type; map tiles of
OpenStreetMap get a blank tile.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

ASSETS = Path(__file__).resolve().parent / ".webassets"
PACKAGES = ("leaflet@1.9.3", "leaflet-draw@1.0.4", "jquery@3.7.1", "bootstrap@5.2.2", "leaflet-side-by-side@2.0.0")
BLANK_PNG = base64.b64decode(  # a 1 x 1 fully transparent PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==")
TYPES = {".js": "application/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}


def fetch_packages() -> Optional[str]:
    """Download the tarballs if missing; None when ready, else why not."""
    ASSETS.mkdir(exist_ok=True)
    missing = [p for p in PACKAGES if not (ASSETS / _tarball(p)).exists()]
    if not missing:
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed: the browser test needs it to fetch Leaflet from the npm registry"
    res = subprocess.run([npm, "pack", "--silent", *missing], cwd=ASSETS, capture_output=True, text=True,
                         timeout=300)
    if res.returncode != 0:
        return f"npm pack failed: {res.stderr.strip()[-300:]}"
    return None


def _tarball(spec: str) -> str:
    name, version = spec.rsplit("@", 1)
    return f"{name}-{version}.tgz"


def _member(tgz: str, member: str) -> bytes:
    with tarfile.open(ASSETS / tgz) as tf:
        f = tf.extractfile(f"package/{member}")
        assert f is not None
        return f.read()


def _side_by_side() -> bytes:
    """leaflet-side-by-side's CommonJS source wrapped for the browser (the CDN serves a bundle)."""
    tgz = _tarball(PACKAGES[4])
    css = (_member(tgz, "layout.css") + b"\n" + _member(tgz, "range.css")).decode()
    src = _member(tgz, "index.js").decode()
    return ("(function(){var module={exports:{}};var exports=module.exports;"
            f"var css={css!r};"
            "function require(n){if(n==='leaflet')return window.L;"
            "if(css){var s=document.createElement('style');s.textContent=css;document.head.appendChild(s);css='';}"
            "return {};}\n" + src + "\n})();").encode()


class CdnStand:
    """Answers CDN requests from the npm tarballs; records what it served and what it stubbed."""

    def __init__(self) -> None:
        leaflet, draw = _tarball(PACKAGES[0]), _tarball(PACKAGES[1])
        self.files: dict[str, bytes] = {
            "leaflet.js": _member(leaflet, "dist/leaflet.js"),
            "leaflet.css": _member(leaflet, "dist/leaflet.css"),
            "leaflet.draw.js": _member(draw, "dist/leaflet.draw.js"),
            "leaflet.draw.css": _member(draw, "dist/leaflet.draw.css"),
            "jquery-3.7.1.min.js": _member(_tarball(PACKAGES[2]), "dist/jquery.min.js"),
            "bootstrap.bundle.min.js": _member(_tarball(PACKAGES[3]), "dist/js/bootstrap.bundle.min.js"),
            "bootstrap.min.css": _member(_tarball(PACKAGES[3]), "dist/css/bootstrap.min.css"),
            "leaflet-side-by-side.min.js": _side_by_side(),
        }
        for img in ("layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png", "marker-shadow.png"):
            self.files[img] = _member(leaflet, f"dist/images/{img}")
        for img in ("spritesheet.png", "spritesheet-2x.png", "spritesheet.svg"):
            self.files[img] = _member(draw, f"dist/images/{img}")
        self.served: list[str] = []
        self.stubbed: list[str] = []

    def answer(self, url: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request to a CDN or tile host."""
        parsed = urlparse(url)
        name = parsed.path.rsplit("/", 1)[-1]
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if "tile.openstreetmap" in parsed.netloc or "basemaps" in parsed.netloc:
            self.stubbed.append(url)
            return 200, "image/png", BLANK_PNG
        if name in self.files:
            self.served.append(url)
            return 200, TYPES.get(suffix, "application/octet-stream"), self.files[name]
        self.stubbed.append(url)
        return 200, TYPES.get(suffix, "text/plain"), BLANK_PNG if suffix == ".png" else b""
