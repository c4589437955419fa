"""s2core.runfolder.atomic: files appear under their final name only when complete.

Every output is written under a temporary name (``.<name>.<random>.part``) in its destination
folder and renamed into place; a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional


def resolve_inside(root: Path, path: Path | str, strict: bool = False) -> Optional[Path]:
    """``path`` (relative to ``root``, or absolute) resolved with symlinks followed, or None when it leaves the
    folder ``root`` (``..``, a link leading elsewhere) or, with ``strict``, does not exist."""
    root = Path(root).resolve()
    try:
        real = (root / path).resolve(strict=strict)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(root) else None


def inside(root: Path, rel: str) -> bool:
    """True when ``rel`` is a relative path that stays inside the folder ``root`` (resolved, symlinks
    followed): no absolute path, no ``..`` climbing out, no link leading elsewhere."""
    if not rel or Path(rel).is_absolute() or "\\" in rel:
        return False
    return resolve_inside(root, rel) is not None


def tmp_path(path: Path) -> Path:
    """A new, empty temporary file beside ``path`` (same folder, so the final rename is atomic), with the
    permissions of a file created under the process's umask (mkstemp alone would make it 0600, and a
    shared run folder unreadable to other users)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, which races with threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as pretty JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
