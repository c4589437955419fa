"""s2core.runfolder.probe: the values of every output of an acquisition at one point (the app's click).

One pixel read per file (a window of 1 × 1), in the file's own CRS: model and product classes, cloud
and shadow probabilities, the SCL class and the reflectances, named and scaled as the layout table says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import rasterio
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from s2core.model.classes import MASK_CLASSES, SCL_NAMES
from s2core.runfolder.layout import CLOUD_PROB, MASK, PRODUCT_MASK, PROB_NODATA, PROB_SCALE, RASTER, SCL, SHADOW_PROB
from s2core.runfolder.manifest import AcquisitionRecord


@dataclass
class PointValues:
    """What the outputs say at a point; ``inside`` is False when it is off the grid."""

    inside: bool
    values: dict[str, Any] = field(default_factory=dict)


def _pixel(path: Path, lon: float, lat: float) -> Optional[tuple[list[Any], list[str]]]:
    """(values of every band, band descriptions) at lon/lat, or None outside the raster."""
    with rasterio.open(path) as ds:
        xs, ys = warp_transform("EPSG:4326", ds.crs, [lon], [lat])
        row, col = ds.index(xs[0], ys[0])
        if not (0 <= row < ds.height and 0 <= col < ds.width):
            return None
        data = ds.read(window=Window(col, row, 1, 1))[:, 0, 0]
        return [v.item() for v in data], [d or f"band {i + 1}" for i, d in enumerate(ds.descriptions)]


def values_at(run_dir: Path, acquisition: AcquisitionRecord, lon: float, lat: float) -> PointValues:
    """The outputs of ``acquisition`` (of the run in ``run_dir``) at ``lon``/``lat`` (degrees)."""
    out: dict[str, Any] = {}
    outputs = acquisition.outputs
    for role, label in ((MASK, "model class"), (PRODUCT_MASK, "product class")):
        if role.name in outputs and (px := _pixel(run_dir / outputs[role.name], lon, lat)) is not None:
            out[label] = MASK_CLASSES.get(int(px[0][0]), str(px[0][0]))
    for role, label in ((CLOUD_PROB, "cloud probability"), (SHADOW_PROB, "shadow probability")):
        if role.name in outputs and (px := _pixel(run_dir / outputs[role.name], lon, lat)) is not None:
            v = int(px[0][0])
            out[label] = None if v == PROB_NODATA else round(v / PROB_SCALE, 3)
    if SCL.name in outputs and (px := _pixel(run_dir / outputs[SCL.name], lon, lat)) is not None:
        code = int(px[0][0])
        out["SCL class"] = f"{code} {SCL_NAMES.get(code, 'invalid code')}"
    if RASTER.name in outputs and (px := _pixel(run_dir / outputs[RASTER.name], lon, lat)) is not None:
        values, names = px
        for value, name in zip(values, names):
            out[f"{name.split(' ')[0]} reflectance"] = None if value == RASTER.nodata else \
                round(value * (RASTER.scale or 1.0), 4)
    return PointValues(bool(out), out)
