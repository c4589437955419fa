"""s2core.model.policy: which catalogs and asset locations a run may touch (a shared server's rule).

The command line is open by default: a local user names any STAC API, catalog path or asset. The app is
restricted by default: on a shared server the hosts and paths it reads are the administrator's choice
(settings ``S2_ALLOWED_STAC_HOSTS``, ``S2_ALLOWED_ASSET_HOSTS``, ``S2_CATALOG_ROOTS``), never the
user's, so a "STAC API URL" cannot reach an internal service and an item cannot name another run's files.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from s2core.errors import PolicyViolation

#: STAC APIs a restricted run may search (host names; ``*`` wildcards allowed).
DEFAULT_STAC_HOSTS = ("planetarycomputer.microsoft.com", "earth-search.aws.element84.com")
#: Where their assets live: Planetary Computer's Azure Blob storage, Earth Search's AWS buckets.
DEFAULT_ASSET_HOSTS = ("*.blob.core.windows.net", "*.s3.amazonaws.com", "*.s3.*.amazonaws.com",
                       "sentinel-cogs.s3.us-west-2.amazonaws.com")
_NAMED = {"pc", "planetary-computer", "planetarycomputer", "earth-search", "earthsearch", "es"}


@dataclass(frozen=True)
class AccessPolicy:
    """Which catalogs and asset locations a run may read. ``restricted=False`` allows everything."""

    restricted: bool = False
    stac_hosts: tuple[str, ...] = DEFAULT_STAC_HOSTS
    asset_hosts: tuple[str, ...] = DEFAULT_ASSET_HOSTS
    local_roots: tuple[Path, ...] = ()

    def host_allowed(self, host: str, patterns: tuple[str, ...]) -> bool:
        """Whether ``host`` matches one of ``patterns`` (always, when not restricted)."""
        return not self.restricted or any(fnmatch.fnmatch(host.lower(), p.lower()) for p in patterns)

    def path_allowed(self, path: str | Path) -> bool:
        """Whether a local path lies inside one of :attr:`local_roots` (symlinks followed)."""
        if not self.restricted:
            return True
        real = Path(os.path.realpath(path))
        return any(real.is_relative_to(Path(os.path.realpath(root))) for root in self.local_roots)

    def check_catalog(self, spec: str) -> None:
        """:class:`PolicyViolation` unless the catalog ``spec`` may be searched."""
        text = str(spec).strip()
        if not self.restricted or text.lower() in _NAMED:
            return
        if text.lower().startswith(("http://", "https://")):
            host = urlparse(text).hostname or ""
            if not self.host_allowed(host, self.stac_hosts):
                raise PolicyViolation(
                    f"This server does not search STAC APIs at {host or text!r}: choose Planetary Computer or Earth "
                    "Search, or ask the administrator to add the host to S2_ALLOWED_STAC_HOSTS."
                )
            return
        if not self.local_roots:
            raise PolicyViolation(
                "This server does not read local catalogs: choose Planetary Computer or Earth Search, or ask the "
                "administrator to set S2_CATALOG_ROOTS to the folders that hold catalogs."
            )
        path = text[7:] if text.lower().startswith("file://") else text
        if not self.path_allowed(path):
            raise PolicyViolation(
                f"This server reads local catalogs only under {', '.join(map(str, self.local_roots))}: pick a "
                "catalog there (S2_CATALOG_ROOTS)."
            )

    def check_href(self, href: str, item_id: str) -> None:
        """:class:`PolicyViolation` unless an asset ``href`` of item ``item_id`` may be read."""
        if not self.restricted:
            return
        parsed = urlparse(href)
        if parsed.scheme in ("http", "https"):
            if self.host_allowed(parsed.hostname or "", self.asset_hosts):
                return
            raise PolicyViolation(
                f"Item {item_id} names an asset on {parsed.hostname!r}, which this server does not read: use a "
                "catalog whose assets are on its storage, or ask the administrator (S2_ALLOWED_ASSET_HOSTS)."
            )
        if parsed.scheme in ("", "file") and self.path_allowed(parsed.path if parsed.scheme else href):
            return
        raise PolicyViolation(
            f"Item {item_id} names an asset outside the allowed storage ({parsed.scheme or 'local path'}): this "
            "server reads assets only from its catalogs' storage and S2_CATALOG_ROOTS."
        )
