"""s2core.outputs: Cloud-Optimized GeoTIFFs, STAC items and JSON written atomically.

Every file is written under a temporary name in the destination folder and renamed
when complete, so a reader never sees a half-written output.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy

from s2core.grid import Grid


def _tmp_path(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_cog(
    path: Path,
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: Optional[float] = 0,
    descriptions: Sequence[str] = (),
    scales: Sequence[float] = (),
    offsets: Sequence[float] = (),
    tags: Mapping[str, Any] | None = None,
    band_tags: Sequence[Mapping[str, Any]] = (),
    overview_resampling: str = "average",
    predictor: int = 2,
) -> Path:
    """Write ``data`` ((bands, H, W) or (H, W)) as a deflate-compressed COG, atomically."""
    arr = data if data.ndim == 3 else data[np.newaxis]
    count, height, width = arr.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": arr.dtype.name,
        "crs": grid.rio_crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with MemoryFile() as mem:
            with mem.open(**profile) as ds:
                ds.write(arr)
                for i, d in enumerate(descriptions, start=1):
                    ds.set_band_description(i, d)
                if scales:
                    ds.scales = tuple(scales)
                if offsets:
                    ds.offsets = tuple(offsets)
                if tags:
                    ds.update_tags(**{k: str(v) for k, v in tags.items()})
                for i, bt in enumerate(band_tags, start=1):
                    ds.update_tags(i, **{k: str(v) for k, v in bt.items()})
            with mem.open() as src:
                rio_copy(
                    src,
                    str(tmp),
                    driver="COG",
                    COMPRESS="DEFLATE",
                    PREDICTOR=("YES" if predictor == 2 else "NO") if arr.dtype.kind in "ui" else "FLOATING_POINT",
                    BLOCKSIZE="512",
                    OVERVIEWS="AUTO",
                    OVERVIEW_RESAMPLING=overview_resampling.upper(),
                    NUM_THREADS="ALL_CPUS",
                    BIGTIFF="IF_SAFER",
                )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as pretty JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_cog_info(path: Path) -> dict[str, Any]:
    """Size, shape and dtype of a written raster (for manifests and the app)."""
    with rasterio.open(path) as ds:
        return {"bytes": path.stat().st_size, "width": ds.width, "height": ds.height, "count": ds.count,
                "dtype": ds.dtypes[0]}
