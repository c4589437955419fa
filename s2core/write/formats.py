"""s2core.write.formats: output raster formats other than COG, by GDAL driver name.

Every run writes Cloud-Optimized GeoTIFFs (the tile server, the app and the masks stage read
them). ``output_format`` adds a copy of ``raster.tif`` in any GDAL driver that can create
files (ENVI, HFA, netCDF, PCIDSK, EHdr, ...), written atomically: into a temporary folder,
then moved into place, sidecar files included.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.drivers import raster_driver_extensions
from rasterio.shutil import copy as rio_copy

from s2core.errors import InvalidParameter

#: Formats the COG itself satisfies (a COG is a GeoTIFF).
GEOTIFF_DRIVERS = ("COG", "GTiff")
#: File extensions for drivers whose GDAL list is ambiguous or empty.
EXTENSIONS = {"ENVI": "dat", "HFA": "img", "netCDF": "nc", "PCIDSK": "pix", "EHdr": "bil", "ISIS3": "cub",
              "JP2OpenJPEG": "jp2", "PNG": "png", "GTiff": "tif", "COG": "tif"}
#: Creation options that make the copies compact.
OPTIONS = {"netCDF": {"FORMAT": "NC4", "COMPRESS": "DEFLATE"}}


def _drivers() -> dict[str, str]:
    with rasterio.Env() as env:
        return {name.upper(): name for name in env.drivers()}


@functools.lru_cache(maxsize=64)  # a trial copy per driver, band count and type is enough per process
def check_output_format(name: str, count: int = 12, dtype: str = "uint16") -> str:
    """The canonical GDAL driver name for ``name`` when it can write a ``count``-band ``dtype`` raster.

    A trial copy of a tiny raster into memory proves it (drivers differ in band and type support).

    Raises:
        InvalidParameter: unknown driver, read-only driver, or one that cannot hold such a raster.
    """
    key = str(name or "").strip()
    for driver in GEOTIFF_DRIVERS:
        if key.upper() == driver.upper():
            return driver
    drivers = _drivers()
    driver = drivers.get(key.upper())
    if driver is None:
        raise InvalidParameter(
            f"Output format {name!r} is not a GDAL raster driver here: use COG (default), GTiff, ENVI, HFA, "
            "netCDF, PCIDSK or EHdr."
        )
    with tempfile.TemporaryDirectory(prefix="s2core-format-") as tmp:  # some drivers cannot write /vsimem
        src = Path(tmp) / "probe.tif"
        try:
            with rasterio.open(src, "w", driver="GTiff", width=4, height=4, count=count, dtype=dtype,
                               crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000), nodata=0) as ds:
                ds.write(np.ones((count, 4, 4), dtype=dtype))
            rio_copy(str(src), str(Path(tmp) / f"probe.{extension(driver)}"), driver=driver, **OPTIONS.get(driver, {}))
        except Exception as exc:  # noqa: BLE001 - GDAL's CPLE errors are not all RasterioError
            raise InvalidParameter(
                f"Output format {driver!r} cannot write a {count}-band {dtype} raster ({str(exc)[:160]}): "
                "use COG (default), GTiff, ENVI, HFA, netCDF, PCIDSK or EHdr."
            ) from None
    return driver


def extension(driver: str) -> str:
    """The file extension used for ``driver``."""
    if driver in EXTENSIONS:
        return EXTENSIONS[driver]
    exts = [ext for ext, drv in raster_driver_extensions().items() if drv == driver]
    return exts[0] if exts else driver.lower()


def convert_raster(src: Path, driver: str) -> Path:
    """Copy ``src`` (a GeoTIFF) to ``<stem>.<ext>`` beside it in ``driver``; returns the main file.

    The copy and its sidecars are written in a temporary folder and moved into place only when
    complete; a failed copy leaves nothing behind.
    """
    tmp = src.parent / f".{src.stem}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    name = f"{src.stem}.{extension(driver)}"
    try:
        try:
            rio_copy(str(src), str(tmp / name), driver=driver, **OPTIONS.get(driver, {}))
        except Exception as exc:  # noqa: BLE001 - GDAL's CPLE errors are not all RasterioError
            raise InvalidParameter(f"Writing {name} with GDAL's {driver} driver failed ({str(exc)[:200]}).") from exc
        for part in tmp.iterdir():  # text sidecars (ENVI/EHdr .hdr) name the file: never the server's path
            if part.suffix.lower() == ".hdr":
                text = part.read_text(encoding="latin-1")
                part.write_text(text.replace(str(tmp / name), name).replace(str(tmp), "."), encoding="latin-1")
        for part in sorted(tmp.iterdir(), key=lambda p: p.name == name):  # the main file last
            part.replace(src.parent / part.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return src.parent / name
