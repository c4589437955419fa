"""s2core.run.recorder: one run in progress — its plan, grid, folder and manifest, outcome by outcome.

:class:`RunState` plans the run and creates its folder in :meth:`RunState.start` (the constructor
does no I/O); :meth:`~RunState.record` adds each acquisition's outcome and rewrites the manifest
atomically; :meth:`~RunState.finish` sets the final status.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy
import pystac_client
import rasterio
import shapely

from s2core import __version__
from s2core.errors import Cancelled, InvalidParameter, NoAcquisitionCovers, S2CoreError
from s2core.model.grid import output_grid
from s2core.model.request import PreprocessRequest
from s2core.model.scene import Acquisition
from s2core.plan import plan
from s2core.progress import ProgressCallback, ProgressEvent
from s2core.read import netstats
from s2core.run.acquisition import EmptyAcquisition
from s2core.runfolder.manifest import (MANIFEST_NAME, AcquisitionRecord, Manifest, SkippedRecord, new_run_id, now_iso,
                                       save_manifest)
from s2core.search.catalog import Catalog

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the outputs."""
    return {
        "s2core": __version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "numpy": numpy.__version__,
        "shapely": shapely.__version__,
        "pystac-client": pystac_client.__version__,
    }


class RunState:
    """One run in progress: its plan, grid, folder and manifest; records outcomes as they come.

    Example:
        >>> run = RunState(request, catalog, print).start()   # doctest: +SKIP
        >>> run.record(acquisition, record); run.finish()      # doctest: +SKIP
    """

    def __init__(self, request: PreprocessRequest, catalog: Catalog, emit: ProgressCallback) -> None:
        self.request, self.catalog, self.emit = request, catalog, emit
        self.first_error: Optional[S2CoreError] = None
        self.done = 0

    def start(self) -> "RunState":
        """Search and select, compute the grid once, create the run folder and write the first manifest.

        Raises:
            NoAcquisitionCovers: nothing to process (the reasons of the first skipped dates).
            InvalidParameter: the run folder holds a run already, or cannot be created.
        """
        request, catalog, emit = self.request, self.catalog, self.emit
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
            created=now_iso(),
            catalog=catalog.name,
            parameters=request.public_params(),
            grid=self.grid.to_dict(),
            skipped=[SkippedRecord(date=s.date, acquisition_id=s.acquisition_id, reason=s.reason,
                                   coverage=s.coverage, items=list(s.items)) for s in skipped],
            items_found=n_items,
            versions=library_versions(),
            timings={"search_s": round(t_search, 3)},
        )
        save_manifest(self.run_dir, self.manifest)
        return self

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
        elif isinstance(outcome, EmptyAcquisition):
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
        save_manifest(self.run_dir, m)
        self.done += 1
        self.emit(ProgressEvent("read", self.span(self.done - 1)[1], f"{acq.date}: {status}", acq.id, outcome=status))

    def cancelled(self, exc: Cancelled) -> None:
        """Record a cancellation."""
        self.manifest.status = "cancelled"
        self.manifest.error = str(exc)
        _finish(self.manifest, self.run_dir, self.bytes0, self.req0, self.t0)

    def aborted(self, exc: BaseException) -> None:
        """Record a run stopped by an error outside any one acquisition (the scheduler went away, …), so
        the manifest never stays ``running``."""
        self.manifest.status = "failed"
        self.manifest.error = str(exc) if isinstance(exc, S2CoreError) else f"{type(exc).__name__}: {exc}"
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


def _failed(acq: Acquisition, message: str) -> AcquisitionRecord:
    return AcquisitionRecord(
        id=acq.id, datetime=acq.iso_datetime, status="failed",
        items=[s.id for s in acq.scenes], tiles=acq.tiles, coverage=round(acq.coverage, 6), error=message,
    )


def _account(manifest: Manifest, bytes0: Optional[int], req0: Optional[int], t0: float) -> None:
    b, r = netstats.downloaded_bytes(), netstats.request_count()
    manifest.bytes_read = (b - bytes0) if (b is not None and bytes0 is not None) else None
    manifest.http_requests = (r - req0) if (r is not None and req0 is not None) else None
    manifest.timings["total_s"] = round(time.monotonic() - t0, 3)


def _finish(manifest: Manifest, run_dir: Path, bytes0: Optional[int], req0: Optional[int], t0: float) -> None:
    _account(manifest, bytes0, req0, t0)
    manifest.finished = now_iso()
    save_manifest(run_dir, manifest)


