"""s2core.runfolder.export: the files of a run, and a zip of it (written atomically)."""

from __future__ import annotations

import fcntl
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from s2core.runfolder.atomic import inside, tmp_path
from s2core.runfolder.manifest import MANIFEST_NAME, load_manifest

FileKind = Literal["geotiff", "stac", "manifest"]


@dataclass(frozen=True)
class RunFile:
    """One output file of a run."""

    path: Path
    name: str  # relative to the run folder, with '/'
    kind: FileKind
    acquisition: Optional[str]
    role: str
    size: int


def run_files(run_dir: Path) -> list[RunFile]:
    """The manifest, then every output the manifest lists (GeoTIFFs and STAC items), that exists.

    Only files inside the run folder are listed: a manifest entry that is absolute, climbs out with
    ``..`` or resolves outside through a symlink is left out (so a zip can never hold such a path).
    """
    run_dir = Path(run_dir)
    root = run_dir.resolve()
    manifest = load_manifest(run_dir)
    out = [RunFile(run_dir / MANIFEST_NAME, MANIFEST_NAME, "manifest", None, "manifest",
                   (run_dir / MANIFEST_NAME).stat().st_size)]
    for acq in manifest.acquisitions:
        for role, rel in acq.outputs.items():
            path = run_dir / rel
            if not inside(root, rel):
                continue
            if path.is_file():
                kind: FileKind = "stac" if path.suffix == ".json" else "geotiff"
                out.append(RunFile(path, rel, kind, acq.id, role, path.stat().st_size))
    return out


def zip_run(run_dir: Path, dest: Optional[Path] = None) -> Path:
    """Zip every file of :func:`run_files` (paths inside the zip start with the run id).

    Written to ``dest`` (default ``<run_dir>/../<run_id>.zip``) under a temporary name and
    renamed when complete. GeoTIFFs are stored (already compressed); JSON is deflated. Built once:
    users asking at the same time wait for the one build (a lock beside ``dest``), and a zip newer
    than every file of the run is served as it is.
    """
    run_dir = Path(run_dir)
    dest = Path(dest) if dest else run_dir.parent / f"{run_dir.name}.zip"
    with open(dest.parent / f".{dest.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        files = run_files(run_dir)
        newest = max(f.path.stat().st_mtime_ns for f in files)
        if dest.is_file() and dest.stat().st_mtime_ns >= newest:
            return dest
        return _write_zip(run_dir, files, dest)


def _write_zip(run_dir: Path, files: list[RunFile], dest: Path) -> Path:
    tmp = tmp_path(dest)  # unique, and renamed into place only when complete
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for f in files:
                method = zipfile.ZIP_STORED if f.kind == "geotiff" else zipfile.ZIP_DEFLATED
                zf.write(f.path, f"{run_dir.name}/{f.name}", compress_type=method)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def human_size(n: int) -> str:
    """``1.2 MB`` style sizes (powers of 1000)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
