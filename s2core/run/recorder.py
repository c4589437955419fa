"""s2core.run.recorder: one run in progress — its plan, grid, folder and manifest, outcome by outcome.

:class:`RunState` plans the run and creates its folder in :meth:`RunState.start` (the constructor
does no I/O); :meth:`~RunState.record` adds each acquisition's outcome and rewrites the manifest
atomically; :meth:`~RunState.finish` sets the final status.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy
import pystac_client
import rasterio
import shapely

from s2core import __version__
from s2core.errors import Cancelled, InvalidParameter, NoAcquisitionCovers, OutputWriteError, S2CoreError
from s2core.model.grid import output_grid
from s2core.model.request import PreprocessRequest
from s2core.model.scene import Acquisition
from s2core.planner import plan
from s2core.progress import ProgressCallback, ProgressEvent
from s2core.read import netstats
from s2core.run.acquisition import EmptyAcquisition
from s2core.runfolder.atomic import inside
from s2core.runfolder.lifecycle import RunLock, remove_stale_parts
from s2core.runfolder.manifest import (MANIFEST_NAME, AcquisitionRecord, Manifest, SkippedRecord, load_manifest,
                                       new_run_id, now_iso, save_manifest)
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
        """Search and select, compute the grid once, take the run folder and write the first manifest.

        A run folder that already holds a run with the same parameters (an interrupted run, or the same
        run with a wider date range) is resumed: its completed acquisitions are kept as they are, neither
        read nor rewritten, and only the others are processed.

        Raises:
            NoAcquisitionCovers: nothing to process (the reasons of the first skipped dates).
            InvalidParameter: the run folder cannot be created, or holds a run made with other parameters.
            RunInUse: another live process is writing that run.
        """
        request, catalog, emit = self.request, self.catalog, self.emit
        self.bytes0, self.req0 = netstats.downloaded_bytes(), netstats.request_count()
        self.t0 = time.monotonic()
        emit(ProgressEvent("search", 0.01, f"Searching {catalog.name}"))
        planned, skipped, n_items = plan(request, catalog)
        t_search = time.monotonic() - self.t0
        if not planned:
            reasons = "; ".join(f"{s.date}: {s.reason}" for s in skipped[:5])
            raise NoAcquisitionCovers(
                f"{n_items} item(s) found but no acquisition covers the AOI well enough ({reasons}"
                f"{'; …' if len(skipped) > 5 else ''}): lower min_tile_cover or raise max_tiles_per_time."
            )
        self.grid = output_grid(request.aoi, request.output_crs, request.resolution, request.grid_origin)
        run_id = request.run_id or new_run_id()
        self.run_dir = Path(request.out_dir) / run_id
        kept = self._take_folder(run_id)
        done = {a.id for a in kept}
        self.acquisitions = [a for a in planned if a.id not in done]
        emit(ProgressEvent("select", 0.03, f"{len(self.acquisitions)} acquisition(s) to process, {len(skipped)} skipped"
                                           + (f", {len(kept)} kept from the earlier run" if kept else "")))
        self.manifest = Manifest(
            run_id=run_id,
            status="running",
            created=now_iso(),
            catalog=catalog.name,
            parameters=request.public_params(),
            grid=self.grid.to_dict(),
            acquisitions=sorted(kept, key=lambda a: (a.datetime, a.id)),
            skipped=[SkippedRecord(date=s.date, acquisition_id=s.acquisition_id, reason=s.reason,
                                   coverage=s.coverage, items=list(s.items)) for s in skipped],
            items_found=n_items,
            versions=library_versions(),
            timings={"search_s": round(t_search, 3)},
            resumed=sorted(done),
        )
        self._save()
        return self

    def _take_folder(self, run_id: str) -> list[AcquisitionRecord]:
        """Create (or reopen) the run folder under its lock; the completed acquisitions of an earlier run
        with the same parameters, whose files are all there."""
        try:
            Path(self.request.out_dir).mkdir(parents=True, exist_ok=True)
            self.run_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise InvalidParameter(
                f"Cannot create the run folder {self.run_dir} ({exc.strerror or exc}): choose an output folder "
                "(out_dir, --out) that you can write to."
            ) from None
        self.lock = RunLock(self.run_dir).acquire()
        try:
            remove_stale_parts(self.run_dir)
            if not (self.run_dir / MANIFEST_NAME).exists():
                return []
            try:
                old = load_manifest(self.run_dir)
            except (OSError, ValueError):
                raise InvalidParameter(
                    f"Run folder {self.run_dir} holds an unreadable manifest: choose another run_id, or remove the folder."
                ) from None
            differs = resume_conflicts(old.parameters, self.request.public_params())
            if differs:
                raise InvalidParameter(
                    f"Run {run_id} in {self.request.out_dir} was made with other parameters ({', '.join(differs)}): "
                    "give the same ones to resume or extend it, or choose another run_id."
                )
            return [a for a in old.acquisitions if a.status == "completed" and _files_present(self.run_dir, a)]
        except BaseException:
            self.lock.release()
            raise

    def _save(self) -> None:
        """Rewrite the manifest atomically; a disk that refuses it is a clear error (the last manifest stays)."""
        try:
            save_manifest(self.run_dir, self.manifest)
        except OSError as exc:
            raise OutputWriteError(
                f"Cannot write the manifest of run {self.manifest.run_id} in {self.run_dir} ({exc.strerror or exc}): "
                "free some space (or fix the folder's permissions); the same command then resumes the run."
            ) from None

    def close(self) -> None:
        """Let the run folder's lock go (after the final manifest)."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

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
        self._save()
        self.done += 1
        self.emit(ProgressEvent("read", self.span(self.done - 1)[1], f"{acq.date}: {status}", acq.id, outcome=status))

    def cancelled(self, exc: Cancelled) -> None:
        """Record a cancellation."""
        self._end("cancelled", str(exc))

    def aborted(self, exc: BaseException) -> None:
        """Record a run stopped outside any one acquisition, so the manifest never stays ``running``:
        ``interrupted`` for Ctrl-C / SIGTERM (the same command resumes it), ``failed`` for an error (the
        scheduler went away, the disk refused the manifest, …)."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            status, error = "interrupted", ("Interrupted: completed acquisitions are kept; run the same command "
                                            "again to resume.")
        else:
            status = "failed"
            error = str(exc) if isinstance(exc, S2CoreError) else f"{type(exc).__name__}: {exc}"
        try:
            self._end(status, error)
        except OutputWriteError as write_error:  # keep the original exception; the lock going says "interrupted"
            log.error("%s", write_error)

    def finish(self, raise_errors: bool = True) -> Manifest:
        """Final status; raises the first error when every acquisition failed (if ``raise_errors``)."""
        m = self.manifest
        completed = [a for a in m.acquisitions if a.status == "completed"]
        failed = [a for a in m.acquisitions if a.status == "failed"]
        status = "completed" if not failed else ("partial" if completed else "failed")
        error = m.error
        if not completed and not failed:
            status = "failed"
            error = "Every selected acquisition was empty inside the AOI (orbit-edge nodata): widen the date range."
        elif status == "failed" and self.first_error is not None:
            error = str(self.first_error)
        self._end(status, error)
        self.emit(ProgressEvent("done", 1.0, f"{len(completed)} acquisition(s) written to {self.run_dir}"))
        if raise_errors and m.status == "failed":
            if self.first_error is not None:
                raise self.first_error
            raise NoAcquisitionCovers(m.error or "no acquisition written")
        return m

    def _end(self, status: str, error: Optional[str]) -> None:
        """The final manifest, then the lock goes."""
        try:
            m = self.manifest
            m.status, m.error = status, error  # type: ignore[assignment]
            _account(m, self.bytes0, self.req0, self.t0)
            m.finished = now_iso()
            self._save()
        finally:
            self.close()


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


def _files_present(run_dir: Path, record: AcquisitionRecord) -> bool:
    """Every output a completed record lists is a file inside the run folder."""
    return bool(record.outputs) and all(inside(run_dir, rel) and (run_dir / rel).is_file()
                                        for rel in record.outputs.values())


#: Parameters that change how a run reads, not what it writes: a resumed run may differ in these.
OPERATIONAL = frozenset({"start", "end", "run_id", "out_dir", "dl_timeout", "search_timeout", "max_retries",
                         "read_workers", "max_aoi_km2", "pc_key_given", "restricted", "owner"})


def resume_conflicts(old: dict, new: dict) -> list[str]:
    """The parameters (dotted, e.g. ``masks.cloud_thr``) in which two runs' recorded parameters differ,
    ignoring the operational ones (dates: a wider range extends a run). Both are compared as JSON."""
    old, new = json.loads(json.dumps(old, default=str)), json.loads(json.dumps(new, default=str))
    out = []
    for key in sorted(set(old) | set(new)):
        if key in OPERATIONAL:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "aoi":
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out
