"""s2core.pipeline: the preprocessing run — search, select, read, stack, write, record.

Example:
    >>> from s2core import make_request, preprocess
    >>> req = make_request(aoi="field.geojson", start="2023-08-01", end="2023-08-31",   # doctest: +SKIP
    ...                    catalog="pc", bands="B02,B03,B04,B08", out_dir="runs")
    >>> manifest = preprocess(req, progress=print)                                       # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rasterio
from rasterio.windows import Window

from s2core import netstats
from s2core.bands import DESCRIPTIONS
from s2core.catalog import Catalog, Signer, open_catalog
from s2core.cloud_nodata import blank_raster
from s2core.errors import Cancelled, InvalidParameter, NoAcquisitionCovers, S2CoreError
from s2core.formats import GEOTIFF_DRIVERS, convert_raster
from s2core.grid import Grid, output_grid
from s2core.land_sea import SeaMask
from s2core.manifest import AcquisitionRecord, Manifest, SkippedRecord
from s2core.masking import ArraySource, FileSource, MaskResult, mask_acquisition
from s2core.masks import MASK_CLASSES, class_fractions
from s2core.outputs import cog_strip_writer, write_cog, write_json
from s2core.progress import CancelToken, ProgressCallback, ProgressEvent, null_progress
from s2core.request import PreprocessRequest
from s2core.selection import Acquisition, SkippedDate, select_acquisitions
from s2core.stac_output import acquisition_item
from s2core.stacking import StackResult, stack_strips, strips

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261121T101500Z-3f9a1c``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the outputs."""
    import numpy
    import pystac_client
    import rasterio
    import shapely

    from s2core import __version__

    return {
        "s2core": __version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "numpy": numpy.__version__,
        "shapely": shapely.__version__,
        "pystac-client": pystac_client.__version__,
    }


def plan(request: PreprocessRequest, catalog: Optional[Catalog] = None) -> tuple[list[Acquisition], list[SkippedDate], int]:
    """Search the catalog and select acquisitions, without reading pixels.

    Returns (acquisitions to process, skipped dates with reasons, number of items found).
    """
    catalog = catalog or _open(request)
    scenes = catalog.search(request.aoi, request.start, request.end, request.max_cloud_cover)
    acquisitions, skipped = select_acquisitions(
        scenes, request.aoi, request.min_tile_cover, request.max_tiles_per_time
    )
    return acquisitions, skipped, len(scenes)


def _open(request: PreprocessRequest) -> Catalog:
    if request.input:
        from s2core.safe import SafeCatalog

        safe = SafeCatalog(request.input)
        if safe.level != request.level:
            raise InvalidParameter(
                f"The input products are {safe.level} but the request says level={request.level!r}: "
                f"set level='{safe.level}' (s2core.safe_runs and the CLI's --input do this themselves)."
            )
        return safe
    key = request.pc_key.get_secret_value() if request.pc_key else None
    return open_catalog(request.catalog, collection=request.collection, pc_key=key, timeout=min(60.0, request.dl_timeout))


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
    """Read, stack and write one acquisition; a pure function of (request, acquisition, grid).

    Raises the S2CoreError of a failed read; outputs are only renamed into place when complete.
    """
    t0 = time.monotonic()
    lo, hi = fraction

    masks = request.masks
    read_share = 0.5 if masks else 0.85

    def on_read(label: str, done: int, total: int) -> None:
        progress(ProgressEvent("read", lo + (hi - lo) * read_share * done / total,
                               f"{acquisition.date}: read {label} ({done}/{total})", acquisition.id))

    folder = run_dir / acquisition.id
    common = {"ACQUISITION": acquisition.id, "SOURCE_ITEMS": ",".join(s.id for s in acquisition.scenes)}
    # mean sun angles travel with every output (and reach the masks stage through its tags)
    common.update({k.split(":")[1].upper(): f"{v:.6f}" for k, v in acquisition.sun_angles.items()})
    if request.land_sea_mask != "none":
        common["LAND_SEA_MASK"] = request.land_sea_mask
    raster_meta = dict(
        nodata=0,
        descriptions=[DESCRIPTIONS[b] for b in request.bands],
        scales=[1e-4] * len(request.bands),
        offsets=[0.0] * len(request.bands),
        tags={**common, "CONTENT": ("top-of-atmosphere" if request.level == "L1C" else "surface")
              + " reflectance x 10000; processing-baseline offset removed",
              "BANDS": ",".join(request.bands)},
        band_tags=[{"BAND": b} for b in request.bands],
    )

    def on_write() -> None:
        progress(ProgressEvent("write", lo + (hi - lo) * (read_share + 0.03), f"{acquisition.date}: writing COGs",
                               acquisition.id))

    stack, land_sea = _stack_and_write(request, acquisition, grid, folder / "raster.tif", raster_meta, sign=sign,
                                       cancel=cancel, on_read=on_read, on_write=on_write)
    write_cog(
        folder / "product_mask.tif", stack.product_mask, grid, nodata=0, overview_resampling="nearest",
        descriptions=["product mask from " + ("SCL" if stack.scl is not None else "the L1C cloud masks")], predictor=1,
        tags={**common, "CLASSES": ";".join(f"{k}={v}" for k, v in MASK_CLASSES.items())},
    )
    outputs = {"raster": f"{acquisition.id}/raster.tif", "product_mask": f"{acquisition.id}/product_mask.tif"}
    assets = {"raster": "raster.tif", "product_mask": "product_mask.tif"}
    if stack.scl is not None:  # L1C products have no SCL
        write_cog(
            folder / "scl.tif", stack.scl, grid, nodata=0, overview_resampling="nearest",
            descriptions=["Scene Classification Layer"], predictor=1, tags=common,
        )
        outputs["scl"] = f"{acquisition.id}/scl.tif"
        assets["scl"] = "scl.tif"
    extra: dict[str, object] = {"s2core:valid_fraction": round(stack.valid_fraction, 6)}
    if land_sea is not None:
        extra["s2core:land_sea_mask"] = request.land_sea_mask
        extra["s2core:land_sea_nodata_fraction"] = round(land_sea, 6)
    mask_result = None
    if masks is not None:
        mask_result = _run_masks(request, acquisition, grid, folder, stack, common, cancel, progress,
                                 (lo + (hi - lo) * (read_share + 0.05), hi))
        assets.update(mask_result.outputs)
        outputs.update({k: f"{acquisition.id}/{v}" for k, v in mask_result.outputs.items()})
        extra["s2core:cloud_models"] = list(masks.cloud_model)
        extra["s2core:shadow_model"] = masks.shadow_model
        extra["s2core:mask_fractions"] = {k: round(v, 6) for k, v in mask_result.fractions.items()}
    blanked = None
    if request.cloud_mask != "none":
        thr = (request.masks.cloud_thr, request.masks.shadow_thr) if request.masks else (1.0, 1.0)
        blanked = blank_raster(folder / "raster.tif", grid, request.cloud_mask, folder, *thr)
        extra["s2core:cloud_mask"] = request.cloud_mask
    if request.output_format not in GEOTIFF_DRIVERS:  # the COG is a GeoTIFF already
        export = convert_raster(folder / "raster.tif", request.output_format)
        outputs["raster_export"] = f"{acquisition.id}/{export.name}"
        assets["raster_export"] = export.name
    item = acquisition_item(acquisition, grid, request.aoi, request.bands, assets, extra)
    write_json(folder / "item.json", item)
    outputs["item"] = f"{acquisition.id}/item.json"
    return AcquisitionRecord(
        id=acquisition.id,
        datetime=acquisition.datetime.isoformat().replace("+00:00", "Z"),
        status="completed",
        items=[s.id for s in acquisition.scenes],
        tiles=acquisition.tiles,
        coverage=round(acquisition.coverage, 6),
        valid_fraction=round(stack.valid_fraction, 6),
        product_mask_fractions={k: round(v, 6) for k, v in class_fractions(stack.product_mask).items()},
        mask_fractions={k: round(v, 6) for k, v in mask_result.fractions.items()} if mask_result else {},
        models=mask_result.models if mask_result else {},
        outputs=outputs,
        cloud_nodata_fraction=None if blanked is None else round(blanked, 6),
        seconds=round(time.monotonic() - t0, 3),
    )


def _run_masks(
    request: PreprocessRequest,
    acquisition: Acquisition,
    grid: Grid,
    folder: Path,
    stack: StackResult,
    tags: dict[str, str],
    cancel: Optional[CancelToken],
    progress: ProgressCallback,
    span: tuple[float, float],
) -> MaskResult:
    """The masks stage: from the in-memory stack, or streaming from the raster just written."""
    assert request.masks is not None
    lo, hi = span

    def on_progress(fraction: float, message: str) -> None:
        progress(ProgressEvent("masks", lo + (hi - lo) * fraction, f"{acquisition.date}: {message}", acquisition.id))

    check = cancel.raise_if_cancelled if cancel else None
    # the stack has data in all bands or none; a stack written by strips is read back by the stage
    valid = stack.data[0] != 0 if stack.data is not None else None
    if request.masks.in_memory:
        if stack.data is None:  # written by strips: the user asked for the whole raster in memory
            with rasterio.open(folder / "raster.tif") as ds:
                stack.data = ds.read()
        source: ArraySource | FileSource = ArraySource(stack.data)
    else:
        stack.data = None  # free it: the stage streams from the COG
        source = FileSource(folder / "raster.tif")
    try:
        return mask_acquisition(request.masks, source, stack.product_mask, request.bands, grid, folder,
                                tags=tags, cancel=check, on_progress=on_progress, valid=valid)
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
) -> tuple[StackResult, Optional[float]]:
    """Stack the acquisition and write its raster COG at ``path``, land/sea NoData applied.

    A stack larger than :data:`~s2core.stacking.STACK_MEMORY` is read and written by strips of rows
    (:func:`~s2core.stacking.strips`) and let go strip by strip, so memory stays near one strip;
    the result then has ``data=None``. Returns the stack (whole-grid SCL and product mask) and
    the fraction of the grid that land/sea masking set to NoData (None without it).

    Raises:
        _EmptyAcquisition: no pixel has data; nothing is written.
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
                raise _EmptyAcquisition("no valid pixel inside the AOI (orbit edge or nodata in every tile)")
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


class _EmptyAcquisition(Exception):
    """An acquisition without a single valid pixel: skipped, not failed."""


class RunState:
    """One run in progress: its plan, grid, folder and manifest; records outcomes as they come."""

    def __init__(self, request: PreprocessRequest, catalog: Catalog, emit: ProgressCallback) -> None:
        self.request, self.catalog, self.emit = request, catalog, emit
        self.bytes0, self.req0 = netstats.downloaded_bytes(), netstats.request_count()
        self.t0 = time.monotonic()
        emit(ProgressEvent("search", 0.01, f"Searching {catalog.name}"))
        self.acquisitions, skipped, n_items = plan(request, catalog)
        t_search = time.monotonic() - self.t0
        if not self.acquisitions:
            reasons = "; ".join(f"{s.date}: {s.reason}" for s in skipped[:5])
            raise NoAcquisitionCovers(
                f"{n_items} item(s) found but no acquisition covers the AOI well enough ({reasons}"
                f"{'; …' if len(skipped) > 5 else ''}): lower min_tile_cover or raise max_tiles_per_time."
            )
        emit(ProgressEvent("select", 0.03, f"{len(self.acquisitions)} acquisition(s) to process, {len(skipped)} skipped"))
        self.grid = output_grid(request.aoi, request.output_crs, request.resolution, request.grid_origin)
        run_id = request.run_id or new_run_id()
        self.run_dir = Path(request.out_dir) / run_id
        if (self.run_dir / MANIFEST_NAME).exists():
            raise InvalidParameter(f"Run folder {self.run_dir} already holds a run: choose another run_id or out_dir.")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidParameter(
                f"Cannot create the run folder {self.run_dir} ({exc.strerror or exc}): choose an output folder "
                "(out_dir, --out) that you can write to."
            ) from None
        self.manifest = Manifest(
            run_id=run_id,
            status="running",
            created=_now(),
            catalog=catalog.name,
            parameters=request.public_params(),
            grid=self.grid.to_dict(),
            skipped=[SkippedRecord(date=s.date, acquisition_id=s.acquisition_id, reason=s.reason,
                                   coverage=s.coverage, items=list(s.items)) for s in skipped],
            items_found=n_items,
            versions=library_versions(),
            timings={"search_s": round(t_search, 3)},
        )
        write_json(self.run_dir / MANIFEST_NAME, self.manifest.model_dump(mode="json"))
        self.first_error: Optional[S2CoreError] = None
        self.done = 0

    def span(self, k: int) -> tuple[float, float]:
        """The share of overall progress of the ``k``-th acquisition."""
        n = len(self.acquisitions)
        return (0.05 + 0.93 * k / n, 0.05 + 0.93 * (k + 1) / n)

    def record(self, acq: Acquisition, outcome: "AcquisitionRecord | BaseException") -> None:
        """Add one acquisition's result (a record, or the exception it raised) and rewrite the manifest."""
        m = self.manifest
        if isinstance(outcome, AcquisitionRecord):
            m.acquisitions.append(outcome)
            status = outcome.status
        elif isinstance(outcome, _EmptyAcquisition):
            m.skipped.append(SkippedRecord(date=str(acq.date), acquisition_id=acq.id, reason=str(outcome),
                                           coverage=acq.coverage, items=[s.id for s in acq.scenes]))
            status = "skipped"
        elif isinstance(outcome, S2CoreError):
            log.error("acquisition %s failed: %s", acq.id, outcome)
            self.first_error = self.first_error or outcome
            m.acquisitions.append(_failed(acq, str(outcome)))
            status = "failed"
        else:
            log.error("acquisition %s failed unexpectedly: %r", acq.id, outcome)
            err = S2CoreError(f"{acq.id}: unexpected {type(outcome).__name__}: {outcome}")
            self.first_error = self.first_error or err
            m.acquisitions.append(_failed(acq, str(err)))
            status = "failed"
        m.acquisitions.sort(key=lambda a: (a.datetime, a.id))
        _account(m, self.bytes0, self.req0, self.t0)
        write_json(self.run_dir / MANIFEST_NAME, m.model_dump(mode="json"))
        self.done += 1
        self.emit(ProgressEvent("read", self.span(self.done - 1)[1], f"{acq.date}: {status}", acq.id, outcome=status))

    def cancelled(self, exc: Cancelled) -> None:
        """Record a cancellation."""
        self.manifest.status = "cancelled"
        self.manifest.error = str(exc)
        _finish(self.manifest, self.run_dir, self.bytes0, self.req0, self.t0)

    def finish(self, raise_errors: bool = True) -> Manifest:
        """Final status; raises the first error when every acquisition failed (if ``raise_errors``)."""
        m = self.manifest
        completed = [a for a in m.acquisitions if a.status == "completed"]
        failed = [a for a in m.acquisitions if a.status == "failed"]
        m.status = "completed" if not failed else ("partial" if completed else "failed")
        if not completed and not failed:
            m.status = "failed"
            m.error = "Every selected acquisition was empty inside the AOI (orbit-edge nodata): widen the date range."
        elif m.status == "failed" and self.first_error is not None:
            m.error = str(self.first_error)
        _finish(m, self.run_dir, self.bytes0, self.req0, self.t0)
        self.emit(ProgressEvent("done", 1.0, f"{len(completed)} acquisition(s) written to {self.run_dir}"))
        if raise_errors and m.status == "failed":
            if self.first_error is not None:
                raise self.first_error
            raise NoAcquisitionCovers(m.error or "no acquisition written")
        return m


def preprocess(
    request: PreprocessRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    catalog: Optional[Catalog] = None,
    *,
    scheduler: "str | object | None" = None,
    workers: int = 2,
) -> Manifest:
    """Run the preprocessing: one analysis-ready raster and product mask per acquisition.

    Writes ``request.out_dir/<run_id>/`` with one folder per acquisition and
    ``manifest.json``. Returns the manifest. An acquisition that fails is recorded as
    failed and the others go on; if *every* acquisition fails, the first error is raised
    after the manifest is written.

    ``scheduler`` runs the acquisitions as Dask tasks: ``"local"`` (a LocalCluster of
    ``workers`` processes), ``"tcp://host:port"`` (an existing scheduler) or a
    ``distributed.Client``. Without it they run in this process, one after the other.

    Raises:
        S2CoreError: bad input, catalog problems, nothing to process, all reads failing,
            or :class:`~s2core.errors.Cancelled`.
    """
    emit = progress or null_progress
    cancel = cancel or CancelToken()
    if isinstance(scheduler, str):
        from s2core.cluster import parse_scheduler

        parse_scheduler(scheduler, workers)  # a bad value is refused before anything is written
    netstats.enable()
    catalog = catalog or _open(request)
    run = RunState(request, catalog, emit)
    try:
        if scheduler is None:
            for k, acq in enumerate(run.acquisitions):
                cancel.raise_if_cancelled()
                emit(ProgressEvent("read", run.span(k)[0], f"{acq.date}: reading {len(acq.scenes)} tile(s)", acq.id))
                try:
                    outcome: "AcquisitionRecord | BaseException" = process_acquisition(
                        request, acq, run.grid, run.run_dir, sign=catalog.sign, cancel=cancel, progress=emit,
                        fraction=run.span(k))
                except Cancelled:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded; one bad acquisition must not lose the others
                    if not isinstance(exc, S2CoreError):
                        log.exception("acquisition %s failed unexpectedly", acq.id)
                    outcome = exc
                run.record(acq, outcome)
        else:
            from s2core.cluster import cluster_client, run_on_cluster

            with cluster_client(scheduler, workers) as client:
                for _, acq, outcome in run_on_cluster(client, [run], cancel, emit):
                    run.record(acq, outcome)
    except Cancelled as exc:
        run.cancelled(exc)
        raise
    return run.finish()


def _failed(acq: Acquisition, message: str) -> AcquisitionRecord:
    return AcquisitionRecord(
        id=acq.id, datetime=acq.datetime.isoformat().replace("+00:00", "Z"), status="failed",
        items=[s.id for s in acq.scenes], tiles=acq.tiles, coverage=round(acq.coverage, 6), error=message,
    )


def _account(manifest: Manifest, bytes0: Optional[int], req0: Optional[int], t0: float) -> None:
    b, r = netstats.downloaded_bytes(), netstats.request_count()
    manifest.bytes_read = (b - bytes0) if (b is not None and bytes0 is not None) else None
    manifest.http_requests = (r - req0) if (r is not None and req0 is not None) else None
    manifest.timings["total_s"] = round(time.monotonic() - t0, 3)


def _finish(manifest: Manifest, run_dir: Path, bytes0: Optional[int], req0: Optional[int], t0: float) -> None:
    _account(manifest, bytes0, req0, t0)
    manifest.finished = _now()
    write_json(run_dir / MANIFEST_NAME, manifest.model_dump(mode="json"))


def load_manifest(run_dir: Path) -> Manifest:
    """Read a run's manifest."""
    return Manifest.model_validate_json((Path(run_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
