"""s2core.write.cog: Cloud-Optimized GeoTIFFs written atomically.

Every file is written under a temporary name in the destination folder and renamed
when complete, so a reader never sees a half-written output.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from s2core.errors import DiskFull, OutputWriteError
from s2core.model.grid import Grid
from s2core.runfolder.atomic import tmp_path
from s2core.write.cog_assembly import CannotAssemble, assemble_cog
from s2core.write.overviews import BLOCK, Pyramid, with_overviews

log = logging.getLogger(__name__)

#: Rows per strip when a raster is streamed (masks stage, cloud-to-NoData rewrite).
STRIP_ROWS = 1024


@dataclass(frozen=True)
class RasterMeta:
    """Descriptive metadata written into a COG."""

    nodata: Optional[float] = 0
    descriptions: Sequence[str] = ()
    scales: Sequence[float] = ()
    offsets: Sequence[float] = ()
    tags: Mapping[str, Any] | None = None
    band_tags: Sequence[Mapping[str, Any]] = ()
    overview_resampling: str = "average"
    predictor: int = 2


def _profile(grid: Grid, count: int, dtype: str, nodata: Optional[float]) -> dict[str, Any]:
    return {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count, "dtype": dtype,
        "crs": grid.rio_crs, "transform": grid.transform, "nodata": nodata,
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK,
    }


def _apply_meta(ds: Any, meta: RasterMeta) -> None:
    for i, d in enumerate(meta.descriptions, start=1):
        ds.set_band_description(i, d)
    if meta.scales:
        ds.scales = tuple(meta.scales)
    if meta.offsets:
        ds.offsets = tuple(meta.offsets)
    if meta.tags:
        ds.update_tags(**{k: str(v) for k, v in meta.tags.items()})
    for i, bt in enumerate(meta.band_tags, start=1):
        ds.update_tags(i, **{k: str(v) for k, v in bt.items()})


def verify_raster(path: Path, count: int, height: int, width: int) -> None:
    """Reopen a just-written raster and read the last block of every band at every overview level: a file
    cut short (full disk, failing disk) fails here, before it gets its final name.

    Raises:
        OutputWriteError: the file is not the complete raster that was written.
    """
    try:
        with rasterio.open(path) as ds:
            if (ds.count, ds.height, ds.width) != (count, height, width):
                raise OutputWriteError(f"{ds.count}x{ds.height}x{ds.width} instead of {count}x{height}x{width}")
            levels = len(ds.overviews(1))
        for level in (None, *range(levels)):
            with rasterio.open(path, overview_level=level) if level is not None else rasterio.open(path) as ds:
                bh, bw = ds.block_shapes[0]
                row, col = ((ds.height - 1) // bh) * bh, ((ds.width - 1) // bw) * bw
                window = Window(col, row, ds.width - col, ds.height - row)
                for band in range(1, ds.count + 1):
                    ds.read(band, window=window)
    except OutputWriteError as exc:
        raise OutputWriteError(f"{path.name} was not written completely ({exc})") from None
    except (RasterioError, OSError) as exc:
        raise OutputWriteError(f"{path.name} was not written completely ({str(exc)[:160]})") from None


def _copy_to_cog(src: Any, dest: Path, dtype: str, meta: RasterMeta, overviews: str = "AUTO") -> None:
    """Copy an open dataset to ``dest`` as a COG with GDAL's COG driver, verified, then atomically renamed;
    ``overviews``: ``AUTO`` (GDAL computes them) or ``FORCE_USE_EXISTING`` (the source's)."""
    # GDAL's default block cache on purpose: a small one makes the overview pass re-read blocks (5x slower)
    options = tile_options(dtype, meta)
    _publish(dest, lambda tmp: rio_copy(
        src, str(tmp), driver="COG", COMPRESS=options["COMPRESS"], LEVEL=options["ZLEVEL"],
        PREDICTOR={"1": "NO", "2": "YES", "3": "FLOATING_POINT"}[options["PREDICTOR"]], BLOCKSIZE=str(BLOCK),
        OVERVIEWS=overviews, OVERVIEW_RESAMPLING=meta.overview_resampling.upper(), NUM_THREADS="ALL_CPUS",
        BIGTIFF="IF_SAFER"), (src.count, src.height, src.width), np.dtype(dtype).itemsize)


def _publish(dest: Path, write: Callable[[Path], None], shape: tuple[int, int, int], itemsize: int) -> None:
    """``write(tmp)`` of a raster of ``shape`` (bands, rows, columns) beside ``dest``, verified
    (:func:`verify_raster`), then renamed to ``dest``; on a failure the temporary file is removed and the
    write's error (:class:`DiskFull`, :class:`OutputWriteError`) raised. :class:`CannotAssemble` passes."""
    tmp = tmp_path(dest)
    try:
        write(tmp)
        verify_raster(tmp, *shape)
        os.replace(tmp, dest)
    except CannotAssemble:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL's CPLE_* errors are not all RasterioError
        error = write_failure(dest, exc, int(np.prod(shape)) * itemsize)  # uncompressed: an upper bound
        tmp.unlink(missing_ok=True)
        raise error from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tile_options(dtype: str, meta: RasterMeta) -> dict[str, str]:
    """GDAL GTiff creation options of the COGs' tiles: DEFLATE at libdeflate's level 1 (3.6x faster than
    the default 6 for about 3 % more bytes), the meta's predictor (floating point for floats), all bands of
    a pixel in one tile (as GDAL's COG driver lays them out), compressed in GDAL's threads."""
    kind = np.dtype(dtype).kind
    return {"COMPRESS": "DEFLATE", "ZLEVEL": "1", "PREDICTOR": ("2" if meta.predictor == 2 else "1") if kind in "ui"
            else "3", "INTERLEAVE": "PIXEL", "NUM_THREADS": "ALL_CPUS", "BIGTIFF": "IF_SAFER"}


def write_failure(dest: Path, exc: BaseException, needed: Optional[int] = None) -> OutputWriteError:
    """The error to report for a write that failed: :class:`DiskFull` when the disk is full, or has less
    free space than the file could take (``needed``; GDAL removes its own temporary files on failure)."""
    free = free_bytes(dest.parent)
    text = str(exc)
    short = free is not None and (free < 1 << 20 or (needed is not None and free < needed))
    if "No space left" in text or getattr(exc, "errno", None) == errno.ENOSPC or short:
        return DiskFull(f"Disk full while writing {dest.name} in {dest.parent} ({_mb(free)} MB free): free some "
                        "space or choose another output folder (--out); the same command then resumes the run.")
    if isinstance(exc, OutputWriteError):
        return OutputWriteError(f"{exc}: the disk or folder may be failing; check {dest.parent}.")
    return OutputWriteError(f"Cannot write {dest.name} in {dest.parent} ({text[:160]}): check the folder's space "
                            "and permissions.")


def free_bytes(folder: Path) -> Optional[int]:
    """Free space of the file system holding ``folder`` (None when unknown)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_free_space(folder: Path, needed: int) -> None:
    """:class:`DiskFull` when ``folder``'s file system has less than ``needed`` bytes free."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise DiskFull(f"Disk full: about {_mb(needed)} MB needed in {folder}, {_mb(free)} MB free: free some space "
                       "or choose another output folder (--out).")


def _mb(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 1e6:,.1f}"


def write_cog(path: Path, data: np.ndarray, grid: Grid, **meta: Any) -> Path:
    """Write ``data`` ((bands, H, W) or (H, W)) as a deflate-compressed COG, atomically.

    Keyword arguments are the fields of :class:`RasterMeta` (nodata, descriptions, scales, …). The
    array goes through :func:`cog_strip_writer` as one strip (its overviews built with NumPy).
    """
    arr = data if data.ndim == 3 else data[None]
    with cog_strip_writer(path, grid, arr.shape[0], arr.dtype.name, **meta) as dst:
        dst.write(arr, window=Window(0, 0, grid.width, grid.height))
    return path


class StripDataset:
    """What :func:`cog_strip_writer` yields: write full-width strips of rows, top to bottom, with
    ``write(data, indexes=None, window=Window(0, r0, width, rows))`` as on a rasterio dataset. Each strip
    also feeds the overview levels; a write out of that order makes GDAL compute the overviews instead."""

    def __init__(self, ds: Any, pyramid: Optional[Pyramid]) -> None:
        self.ds, self.pyramid = ds, pyramid
        self.width, self.height, self.count = ds.width, ds.height, ds.count
        self._next_row = 0
        self._strip: dict[int, np.ndarray] = {}  # bands of the current strip written one by one

    def write(self, data: np.ndarray, indexes: Optional[int | Sequence[int]] = None,
              window: Optional[Window] = None) -> None:
        self.ds.write(data, indexes, window=window)
        if self.pyramid is None:
            return
        arr = data if data.ndim == 3 else data[None]
        bands = list(range(1, self.count + 1)) if indexes is None else (
            [indexes] if isinstance(indexes, int) else list(indexes))
        win = window or Window(0, 0, self.width, self.height)
        if (win.col_off, win.width) != (0, self.width) or int(win.row_off) != self._next_row:
            self._give_up()
            return
        if bands == list(range(1, self.count + 1)) and not self._strip:  # the whole strip at once: no copy
            self.pyramid.add(arr)
        else:
            for b, band in zip(bands, arr):
                self._strip[b] = band
            if len(self._strip) < self.count:
                return
            self.pyramid.add(np.stack([self._strip[b] for b in range(1, self.count + 1)]))
            self._strip = {}
        self._next_row += int(win.height)

    def _give_up(self) -> None:
        assert self.pyramid is not None
        self.pyramid.discard()
        self.pyramid = None


@contextmanager
def cog_strip_writer(path: Path, grid: Grid, count: int, dtype: str, **meta: Any) -> Iterator[StripDataset]:
    """Write a COG strip by strip with bounded memory.

    Yields a :class:`StripDataset` over a tiled GeoTIFF under a temporary name beside ``path``; write
    full-width strips of rows to it, top to bottom. An integer raster's strips are compressed into COG
    tiles as they arrive (in GDAL's threads) and halved into the overview levels
    (:mod:`s2core.write.overviews`), which the COG then gets as they are
    (:mod:`s2core.write.cog_assembly`); a float raster, or strips out of order, go through GDAL's COG
    driver. On a clean exit the COG appears at ``path`` (atomically); on an error nothing does.
    """
    info = RasterMeta(**meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = tmp_path(path.with_name(path.stem + ".strips.tif"))
    pyramid: Optional[Pyramid] = None
    vrt = tmp_path(path.with_name(path.stem + ".overviews.vrt"))  # a .part name too: swept if killed
    shape, itemsize = (count, grid.height, grid.width), np.dtype(dtype).itemsize
    try:
        if np.dtype(dtype).kind in "ui":  # integer rasters: compressed tiles, overviews from the strips
            creation = tile_options(dtype, info)
            pyramid = Pyramid(path, grid.width, grid.height, count, dtype, info.nodata, info.overview_resampling,
                              grid.rio_crs, grid.transform, {**creation, "NUM_THREADS": "1"})
        else:  # band-interleaved: GDAL's COG copy then reads each band's blocks on their own (1.8x faster than
            # pixel-interleaved blocks of 12 bands through a 256 MB block cache)
            creation = {"INTERLEAVE": "BAND", "BIGTIFF": "IF_SAFER"}
        with rasterio.open(scratch, "w", **_profile(grid, count, dtype, info.nodata), **creation) as ds:
            writer = StripDataset(ds, pyramid)
            yield writer
            _apply_meta(ds, info)
        if writer.pyramid is not None:
            levels = writer.pyramid.close()
            try:
                _publish(path, lambda tmp: assemble_cog(scratch, levels, tmp), shape, itemsize)
            except CannotAssemble as exc:  # not expected from GDAL's own files: GDAL's COG driver then
                log.warning("%s: %s; GDAL's COG driver writes it instead", path.name, exc)
                with rasterio.open(with_overviews(scratch, levels, vrt)) as src:
                    _copy_to_cog(src, path, dtype, info, overviews="FORCE_USE_EXISTING")
        else:
            with rasterio.open(scratch) as src:
                _copy_to_cog(src, path, dtype, info)
    except OutputWriteError:
        raise
    except (RasterioError, CPLE_BaseError, OSError) as exc:  # the scratch files (a full disk while streaming)
        raise write_failure(path, exc, int(np.prod(shape)) * itemsize) from None
    finally:
        if pyramid is not None:
            pyramid.discard()
        vrt.unlink(missing_ok=True)
        remove_soon(scratch)


#: Scratch files at least this large are removed in the background (:func:`remove_soon`).
REMOVE_IN_BACKGROUND_BYTES = 256 << 20


def remove_soon(path: Path) -> None:
    """Remove a scratch file; a large one in the background: the kernel takes about a second to free the page
    cache of a whole tile's 2.9 GB, which the run need not wait for (a file left by a killed process is a
    ``.part`` file, swept by the next run)."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size < REMOVE_IN_BACKGROUND_BYTES:
        path.unlink(missing_ok=True)
    else:
        threading.Thread(target=path.unlink, kwargs={"missing_ok": True}, name="s2unlink", daemon=True).start()


def read_cog_info(path: Path) -> dict[str, Any]:
    """Size, shape and dtype of a written raster (for manifests and the app)."""
    with rasterio.open(path) as ds:
        return {"bytes": path.stat().st_size, "width": ds.width, "height": ds.height, "count": ds.count,
                "dtype": ds.dtypes[0]}
