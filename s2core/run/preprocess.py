"""s2core.run.preprocess: the preprocessing run — plan, then every acquisition in this process or on Dask.

Example:
    >>> from s2core import make_request, preprocess
    >>> req = make_request(aoi="field.geojson", start="2023-08-01", end="2023-08-31",   # doctest: +SKIP
    ...                    catalog="pc", bands="B02,B03,B04,B08", out_dir="runs")
    >>> manifest = preprocess(req, progress=print)                                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Optional

from s2core.errors import Cancelled, S2CoreError
from s2core.model.request import PreprocessRequest
from s2core.planner import open_request_catalog
from s2core.progress import CancelToken, ProgressCallback, ProgressEvent, null_progress
from s2core.read import netstats
from s2core.run.acquisition import process_acquisition
from s2core.run.recorder import RunState
from s2core.run.request import complete_request
from s2core.runfolder.manifest import AcquisitionRecord, Manifest
from s2core.search.catalog import Catalog

log = logging.getLogger(__name__)


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
        from s2core.run.cluster import parse_scheduler  # lazy: the Dask path is optional

        parse_scheduler(scheduler, workers)  # a bad value is refused before anything is written
    netstats.enable()
    request = complete_request(request)
    catalog = catalog or open_request_catalog(request)
    run = RunState(request, catalog, emit).start()
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
            run_on_scheduler([run], cancel, emit, scheduler, workers)
    except Cancelled as exc:
        run.cancelled(exc)
        raise
    except BaseException as exc:
        run.aborted(exc)
        raise
    return run.finish()


def run_on_scheduler(runs: list[RunState], cancel: CancelToken, emit: ProgressCallback, scheduler: "str | object",
                     workers: int) -> None:
    """Every acquisition of every run as one Dask task graph; outcomes recorded as they arrive."""
    from s2core.run.cluster import cluster_client, run_on_cluster  # lazy: distributed is heavy and optional here

    with cluster_client(scheduler, workers) as client:
        for r, acq, outcome in run_on_cluster(client, runs, cancel, emit):
            runs[r].record(acq, outcome)
