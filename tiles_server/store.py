"""tiles_server.store: the only way from a request to a file — run id / acquisition id / role.

Clients never give a path or a URL. Ids must match a strict pattern, the run folder and every
file are resolved (symlinks followed) and must stay inside the root, and the file must be one
that the run's manifest lists for that acquisition. Anything else is "not found".
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from s2core.model.request import valid_id
from s2core.runfolder.atomic import resolve_inside
from s2core.runfolder.listing import run_folders
from s2core.runfolder.manifest import MANIFEST_NAME, AcquisitionRecord, Manifest

log = logging.getLogger(__name__)

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class NotFound(Exception):
    """A run, acquisition, layer or file that does not exist (or may not be served)."""


def is_tiff(path: Path) -> bool:
    """True when ``path`` starts like a (Big)TIFF: a VRT or any other format renamed ``.tif`` is refused."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in TIFF_MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class RunEntry:
    """A run's manifest with its folder and WGS84 bounds."""

    run_id: str
    folder: Path
    manifest: Manifest
    bounds: Optional[tuple[float, float, float, float]]


def _wgs84_bounds(grid: dict[str, Any]) -> Optional[tuple[float, float, float, float]]:
    try:
        left, bottom, right, top = grid["bounds"]
        w, s, e, n = transform_bounds(CRS.from_user_input(grid["crs"]), CRS.from_epsg(4326),
                                      left, bottom, right, top, densify_pts=21)
        return (round(w, 7), round(s, 7), round(e, 7), round(n, 7))
    except Exception:  # noqa: BLE001 - a grid we cannot read gives no bounds, not an error
        return None


class RunStore:
    """Runs under one root folder, read from their manifests (cached by modification time)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._cache: dict[str, tuple[int, RunEntry]] = {}
        self._lock = threading.Lock()

    def _inside(self, path: Path) -> Optional[Path]:
        """``path`` resolved, or None when it does not exist or leaves the root (e.g. through a symlink)."""
        return resolve_inside(self.root, path, strict=True)

    def run(self, run_id: str) -> RunEntry:
        """The run ``run_id``; :class:`NotFound` for a bad id, a folder outside the root or no manifest."""
        if not valid_id(run_id):
            raise NotFound(f"no run {run_id!r}")
        folder = self._inside(self.root / run_id)
        manifest = self._inside(self.root / run_id / MANIFEST_NAME) if folder else None
        if folder is None or manifest is None or manifest.parent != folder or not manifest.is_file():
            raise NotFound(f"no run {run_id!r}")
        mtime = manifest.stat().st_mtime_ns
        with self._lock:
            hit = self._cache.get(run_id)
            if hit and hit[0] == mtime and hit[1].folder == folder:
                return hit[1]
        try:
            doc = Manifest.model_validate_json(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("run %s: unreadable manifest (%s)", run_id, type(exc).__name__)
            raise NotFound(f"no run {run_id!r}") from None
        entry = RunEntry(run_id, folder, doc, _wgs84_bounds(doc.grid))
        with self._lock:
            self._cache[run_id] = (mtime, entry)
        return entry

    def runs(self) -> list[RunEntry]:
        """All readable runs, newest first."""
        out = []
        for child in run_folders(self.root):
            try:
                out.append(self.run(child.name))
            except NotFound:
                continue
        return sorted(out, key=lambda r: r.manifest.created, reverse=True)

    def acquisition(self, run_id: str, acquisition_id: str) -> tuple[RunEntry, AcquisitionRecord]:
        """A completed acquisition of a run."""
        entry = self.run(run_id)
        if valid_id(acquisition_id):
            for acq in entry.manifest.acquisitions:
                if acq.id == acquisition_id and acq.status == "completed":
                    return entry, acq
        raise NotFound(f"no acquisition {acquisition_id!r} in run {run_id!r}")

    def file(self, run_id: str, acquisition_id: str, role: str) -> Path:
        """The output file ``role`` of an acquisition: a GeoTIFF resolved inside the run folder."""
        entry, acq = self.acquisition(run_id, acquisition_id)
        rel = acq.outputs.get(role)
        if rel:
            path = self._inside(entry.folder / rel)
            if (path is not None and path.is_relative_to(entry.folder) and path.is_file()
                    and path.suffix.lower() in (".tif", ".tiff") and is_tiff(path)):
                return path
        raise NotFound(f"no {role} output for {acquisition_id!r} in run {run_id!r}")
