"""s2core.runfolder.atomic: files appear under their final name only when complete.

Every output is written under a temporary name (``.<name>.<random>.part``) in its destination
folder and renamed into place; a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def tmp_path(path: Path) -> Path:
    """A new, empty temporary file beside ``path`` (same folder, so the final rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(name)


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
