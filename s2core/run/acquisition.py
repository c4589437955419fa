"""s2core.run.acquisition: one acquisition from its scenes to its files — read, stack, masks, write.

:func:`process_acquisition` is a function of (request, acquisition, grid) and the run folder: it
runs the same in this thread, another process or a Dask worker, and its only effects are the
files it writes under ``run_dir/<acquisition id>/`` (each renamed into place when complete).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rasterio
from rasterio.windows import Window

from s2core.allocator import release_free_memory
from s2core.masks.registry import decision_for, model_bands
from s2core.model.decision import Decision
from s2core.masks.shadow_check import geometry_of
from s2core.masks.stage import ArraySource, FileSource, MaskResult, StripFeed, mask_acquisition, plan_models
from s2core.model.bands import DESCRIPTIONS
from s2core.model.classes import MASK_CLASSES, class_fractions
from s2core.model.grid import Grid, aoi_pixels
from s2core.errors import S2CoreError
from s2core.model.request import PreprocessRequest, valid_id
from s2core.model.scene import Acquisition, Signer
from s2core.progress import CancelToken, ProgressCallback, ProgressEvent, null_progress
from s2core.runfolder.atomic import write_json
from s2core.runfolder.layout import ITEM, PRODUCT_MASK, RASTER, RASTER_EXPORT, SCL
from s2core.runfolder.manifest import AcquisitionRecord
from s2core.runfolder.stac_items import acquisition_item
from s2core.stack.context import read_cloud_context
from s2core.stack.land_sea import SeaMask
from s2core.read.sources import source_resolutions
from s2core.stack.stacking import StackResult, stack_strips, strips
from s2core.write.cloud_nodata import blank_raster
from s2core.write.cog import check_free_space, cog_strip_writer, write_cog
from s2core.write.formats import GEOTIFF_DRIVERS, convert_raster

log = logging.getLogger(__name__)




def process_acquisition(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    run_dir: Path,
    *,
    sign: Signer,
    cancel: Optional[CancelToken] = None,
    progress: ProgressCallback = null_progress,
    fraction: tuple[float, float] = (0.0, 1.0),
) -> AcquisitionRecord:
    """Read, stack, mask and write one acquisition into ``run_dir/<acquisition id>/``.

    The result depends only on (request, acquisition, grid), so this runs the same in a thread, a
    process or a Dask worker; its one effect is that folder (each file renamed into place when
    complete). Raises the S2CoreError of a failed read, after which the folder holds nothing new.
    """
    t0 = time.monotonic()
    lo, hi = fraction

    masks = request.masks
    read_share = 0.5 if masks else 0.85

    def on_read(label: str, done: int, total: int) -> None:
        progress(ProgressEvent("read", lo + (hi - lo) * read_share * done / total,
                               f"{acquisition.date}: read {label} ({done}/{total})", acquisition.id))

    if not valid_id(acquisition.id):  # ids are built from sanitised parts (s2core.planner); never a path
        raise S2CoreError(f"Acquisition id {acquisition.id!r} is not a folder name: it was not built by s2core.planner.")
    folder = run_dir / acquisition.id
    check_free_space(run_dir, estimated_bytes(request, grid))  # before reading: fail early, never half-write
    common = _common_tags(request, acquisition)

    def on_write() -> None:
        progress(ProgressEvent("write", lo + (hi - lo) * (read_share + 0.03), f"{acquisition.date}: writing COGs",
                               acquisition.id))

    aoi = aoi_pixels(request.aoi, grid)  # the statistics are the AOI's, not its bounding box's
    source_res = source_resolutions(acquisition, model_bands(masks), sign) if masks is not None else None
    # the masks stage's inputs are gathered from the strips as they are written: nothing is read back
    feed = StripFeed(plan_models(masks, request.bands, grid, source_res), grid) if masks is not None else None
    stack, land_sea = _stack_and_write(request, acquisition, grid, folder / RASTER.file,
                                       _raster_meta(request, common), sign=sign, cancel=cancel, on_read=on_read,
                                       on_write=on_write, feed=feed)
    assets = _write_class_layers(stack, grid, folder, common)  # role -> file in the folder
    extra: dict[str, object] = {"s2core:valid_fraction": round(stack.valid_fraction, 6)}
    if land_sea is not None:
        extra["s2core:land_sea_mask"] = request.land_sea_mask
        extra["s2core:land_sea_nodata_fraction"] = round(land_sea, 6)
    mask_result = None
    if masks is not None:
        assert feed is not None
        mask_result = _run_masks(request, acquisition, grid, folder, stack, common, sign, cancel, progress,
                                 (lo + (hi - lo) * (read_share + 0.05), hi), aoi, feed, source_res)
        assets.update(mask_result.outputs)
        extra["s2core:cloud_models"] = list(masks.cloud_model)
        extra["s2core:shadow_model"] = masks.shadow_model
        extra["s2core:mask_fractions"] = {k: round(v, 6) for k, v in mask_result.fractions.items()}
    blanked = None
    if request.cloud_mask != "none":
        decision = decision_for(request.masks) if request.masks else Decision("threshold", 1.0, 1.0)
        blanked = blank_raster(folder / RASTER.file, grid, request.cloud_mask, folder, decision)
        extra["s2core:cloud_mask"] = request.cloud_mask
    if request.output_format not in GEOTIFF_DRIVERS:  # the COG is a GeoTIFF already
        assets[RASTER_EXPORT] = convert_raster(folder / RASTER.file, request.output_format).name
    item = acquisition_item(acquisition, grid, request.aoi, request.bands, assets, extra)
    write_json(folder / ITEM.file, item)
    assets[ITEM.name] = ITEM.file
    return _record(acquisition, stack, mask_result, assets, blanked, time.monotonic() - t0, aoi)


def _record(acquisition: Acquisition, stack: StackResult, mask_result: Optional[MaskResult], assets: dict[str, str],
            blanked: Optional[float], seconds: float, aoi: Optional[np.ndarray]) -> AcquisitionRecord:
    """The manifest record of a completed acquisition."""
    return AcquisitionRecord(
        id=acquisition.id,
        datetime=acquisition.iso_datetime,
        status="completed",
        items=[s.id for s in acquisition.scenes],
        tiles=acquisition.tiles,
        coverage=round(acquisition.coverage, 6),
        valid_fraction=round(stack.valid_fraction, 6),
        product_mask_fractions={k: round(v, 6) for k, v in class_fractions(stack.product_mask, aoi).items()},
        mask_fractions={k: round(v, 6) for k, v in mask_result.fractions.items()} if mask_result else {},
        models=mask_result.models if mask_result else {},
        merge=mask_result.merge if mask_result else {},
        warnings=mask_result.warnings if mask_result else [],
        outputs={role: f"{acquisition.id}/{name}" for role, name in assets.items()},
        cloud_nodata_fraction=None if blanked is None else round(blanked, 6),
        seconds=round(seconds, 3),
    )


def estimated_bytes(request: PreprocessRequest, grid: Grid) -> int:
    """About how many bytes an acquisition's outputs take while they are written (DEFLATE'd COGs with
    overviews, masks, the scratch files of the raster): used to refuse early on a full disk."""
    pixels = grid.width * grid.height
    raster = pixels * len(request.bands) * 2
    cog = raster * 0.8
    # the COG, its masks, and the compressed tiles the raster is streamed to (the COG's size: it is made of them)
    total = cog + pixels * (1.0 if request.masks is not None else 0.4) + cog
    if request.output_format not in GEOTIFF_DRIVERS:
        total += raster  # raster.<ext> beside the COG, usually uncompressed
    return int(total)


def _common_tags(request: PreprocessRequest, acquisition: Acquisition) -> dict[str, str]:
    """Tags of every output of an acquisition: its id, source items, mean sun/view angles (they reach
    the masks stage through these tags), the land/sea option."""
    common = {"ACQUISITION": acquisition.id, "SOURCE_ITEMS": ",".join(s.id for s in acquisition.scenes)}
    common.update(acquisition.angles.tags())
    if request.land_sea_mask != "none":
        common["LAND_SEA_MASK"] = request.land_sea_mask
    return common


def _raster_meta(request: PreprocessRequest, common: dict[str, str]) -> dict[str, Any]:
    """Metadata of ``raster.tif`` (descriptions, scales, tags)."""
    return dict(
        nodata=RASTER.nodata,
        descriptions=[DESCRIPTIONS[b] for b in request.bands],
        scales=[RASTER.scale] * len(request.bands),
        offsets=[0.0] * len(request.bands),
        tags={**common, "CONTENT": ("top-of-atmosphere" if request.level == "L1C" else "surface")
              + " reflectance x 10000; processing-baseline offset removed",
              "BANDS": ",".join(request.bands)},
        band_tags=[{"BAND": b} for b in request.bands],
    )


def _write_class_layers(stack: StackResult, grid: Grid, folder: Path, common: dict[str, str]) -> dict[str, str]:
    """Write the product mask and (L2A) the SCL; returns role -> file of what is in the folder so far."""
    write_cog(
        folder / PRODUCT_MASK.file, stack.product_mask, grid, nodata=PRODUCT_MASK.nodata, overview_resampling="nearest",
        descriptions=["product mask from " + ("SCL" if stack.scl is not None else "the L1C cloud masks")], predictor=1,
        tags={**common, "CLASSES": ";".join(f"{k}={v}" for k, v in MASK_CLASSES.items())},
    )
    assets = {RASTER.name: RASTER.file, PRODUCT_MASK.name: PRODUCT_MASK.file}
    if stack.scl is not None:  # L1C products have no SCL
        write_cog(
            folder / SCL.file, stack.scl, grid, nodata=SCL.nodata, overview_resampling="nearest",
            descriptions=["Scene Classification Layer"], predictor=1, tags=common,
        )
        assets[SCL.name] = SCL.file
    return assets


def _run_masks(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    folder: Path,
    stack: StackResult,
    tags: dict[str, str],
    sign: Signer,
    cancel: Optional[CancelToken],
    progress: ProgressCallback,
    span: tuple[float, float],
    aoi: Optional[np.ndarray],
    feed: StripFeed,
    source_res: Optional[dict[str, float]],
) -> MaskResult:
    """The masks stage: on the inputs the feed gathered from the strips, else from the in-memory stack or
    streaming from the raster just written. The shadow check gets the acquisition's angles and the
    product's clouds around the grid; each model's inference resolution the pixel size of its bands'
    sources."""
    assert request.masks is not None
    lo, hi = span
    angles = acquisition.angles
    context = None
    geometry = geometry_of(angles)
    if request.masks.shadow_check != "off" and geometry is not None:
        context = read_cloud_context(request, acquisition, grid, geometry, request.masks.max_cloud_height,
                                     sign=sign, cancel=cancel)

    def on_progress(fraction: float, message: str) -> None:
        progress(ProgressEvent("masks", lo + (hi - lo) * fraction, f"{acquisition.date}: {message}", acquisition.id))

    check = cancel.raise_if_cancelled if cancel else None
    if request.masks.in_memory and not feed.complete:
        if stack.data is None:  # written by strips: the user asked for the whole raster in memory
            with rasterio.open(folder / RASTER.file) as ds:
                stack.data = ds.read()
        source: ArraySource | FileSource = ArraySource(stack.data)
    else:
        stack.data = None  # free it: the stage streams from the COG
        source = FileSource(folder / RASTER.file)
    release_free_memory()  # the strips' freed buffers: not kept resident beside the stage's own arrays
    try:
        return mask_acquisition(request.masks, source, stack.product_mask, request.bands, grid, folder,
                                tags=tags, cancel=check, on_progress=on_progress, valid=feed.valid, angles=angles,
                                context=context, source_resolution=source_res, within=aoi, inputs=feed.inputs)
    finally:
        if isinstance(source, FileSource):
            source.close()


def _stack_and_write(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    path: Path,
    meta: dict[str, Any],
    *,
    sign: Signer,
    cancel: Optional[CancelToken],
    on_read: Callable[[str, int, int], None],
    on_write: Callable[[], None],
    feed: Optional[StripFeed] = None,
) -> tuple[StackResult, Optional[float]]:
    """Stack the acquisition and write its raster COG at ``path``, land/sea NoData applied.

    A stack larger than :data:`~s2core.stack.stacking.STACK_MEMORY` is read and written by strips of rows
    (:func:`~s2core.stack.stacking.strips`) and let go strip by strip, so memory stays near one strip;
    the result then has ``data=None``. Each strip as written also goes to ``feed`` (the masks stage's
    inputs). Returns the stack (whole-grid SCL and product mask) and
    the fraction of the grid that land/sea masking set to NoData (None without it).

    Raises:
        EmptyAcquisition: no pixel has data; nothing is written.
        S2CoreError: a read failed (or Cancelled); nothing is written either.
    """
    rows = strips(grid, len(request.bands))
    whole = len(rows) == 1
    sea = SeaMask(grid) if request.land_sea_mask != "none" else None
    scl: Optional[np.ndarray] = None
    mask = np.zeros(grid.shape, dtype=np.uint8) if not whole else None
    data: Optional[np.ndarray] = None
    valid = blanked = 0
    t0 = time.monotonic()
    try:
        with cog_strip_writer(path, grid, len(request.bands), "uint16", **meta) as dst:
            for r0, part in stack_strips(request, acquisition, grid, rows, sign=sign, cancel=cancel, on_read=on_read):
                r1 = r0 + part.product_mask.shape[0]
                valid += round(part.valid_fraction * part.product_mask.size)
                if sea is not None:
                    hit = sea.rows(r0, r1, part.scl)
                    if request.land_sea_mask == "land":
                        np.logical_not(hit, out=hit)
                    assert part.data is not None
                    for band in part.data:
                        band[hit] = 0
                    part.product_mask[hit] = 0  # nodata in the raster is nodata in the mask
                    blanked += int(hit.sum())
                dst.write(part.data, window=Window(0, r0, grid.width, r1 - r0))
                if feed is not None:
                    feed.add(r0, part.data)
                if whole:
                    data, scl, mask = part.data, part.scl, part.product_mask
                else:
                    assert mask is not None
                    mask[r0:r1] = part.product_mask
                    if part.scl is not None:
                        scl = np.zeros(grid.shape, dtype=np.uint8) if scl is None else scl
                        scl[r0:r1] = part.scl
                del part
            if valid == 0:  # raised inside the writer: nothing appears at ``path``
                raise EmptyAcquisition("no valid pixel inside the AOI (orbit edge or nodata in every tile)")
            on_write()
    except BaseException:  # empty, failed or cancelled: no folder made for nothing
        _remove_if_empty(path.parent)
        raise
    assert mask is not None
    size = grid.width * grid.height
    stack = StackResult(data=data, scl=scl, product_mask=mask, valid_fraction=valid / size,
                        seconds=time.monotonic() - t0)
    return stack, (blanked / size if sea is not None else None)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or already gone
        pass


class EmptyAcquisition(Exception):
    """An acquisition without a single valid pixel: skipped, not failed."""


