"""s2core.read.gdal_mem: a NumPy array seen by GDAL where it lies (a MEM dataset over its buffer, no copy).

Used to hand arrays to GDAL's own algorithms (COG creation, resampled reads) without the
copy that an in-memory GeoTIFF would make. The caller keeps the array alive while the
dataset is open.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio

_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64"}


def open_array(arr: np.ndarray, mode: str = "r") -> Any:
    """Open ``arr`` ((bands, H, W) or (H, W), C-contiguous) as a rasterio dataset without copying it.

    ``mode="r+"`` lets the caller set georeferencing and metadata before handing it to GDAL.
    """
    if not arr.flags.c_contiguous:
        raise ValueError("open_array needs a C-contiguous array")
    count, height, width = arr.shape if arr.ndim == 3 else (1, *arr.shape)
    size = arr.dtype.itemsize
    name = (f"MEM:::DATAPOINTER={arr.__array_interface__['data'][0]},PIXELS={width},LINES={height},BANDS={count},"
            f"DATATYPE={_GDAL_TYPES[arr.dtype.name]},PIXELOFFSET={size},LINEOFFSET={width * size},"
            f"BANDOFFSET={width * height * size},GEOTRANSFORM=0/1/0/0/0/-1")  # north-up pixel units, not "ungeoreferenced"
    with rasterio.Env(GDAL_MEM_ENABLE_OPEN="YES"):
        return rasterio.open(name, mode)
