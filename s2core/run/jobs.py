"""s2core.run.jobs: runs in background threads, observable and cancellable from any caller.

The app keeps one :class:`JobManager` per process; a job survives page reloads and page
switches because it lives here, not in the page. A job's state is read as an immutable
:class:`JobSnapshot`, so UI code never touches the worker's objects.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional

from s2core.allocator import bound_malloc_arenas
from s2core.errors import Cancelled, S2CoreError
from s2core.runfolder.manifest import Manifest
from s2core.run.preprocess import preprocess
from s2core.runfolder.manifest import new_run_id
from s2core.progress import CancelToken, ProgressEvent
from s2core.model.request import PreprocessRequest

log = logging.getLogger(__name__)

JobStatus = Literal["running", "completed", "partial", "failed", "cancelled"]
AcqState = Literal["pending", "running", "completed", "failed", "skipped", "cancelled"]


@dataclass(frozen=True)
class JobSnapshot:
    """What a job is doing, at one moment."""

    job_id: str
    run_id: str
    run_dir: Path
    status: JobStatus
    fraction: float
    stage: str
    message: str
    acquisitions: dict[str, AcqState]
    acquisition_messages: dict[str, str]
    error: Optional[str]
    started: float
    finished: Optional[float]
    cancel_requested: bool

    @property
    def done(self) -> bool:
        """True once the job has stopped, for whatever reason."""
        return self.status != "running"

    @property
    def elapsed(self) -> float:
        """Seconds since the start (until the end once finished)."""
        return (self.finished or time.time()) - self.started


@dataclass
class Job:
    """One background run. Read it with :meth:`snapshot`; stop it with :meth:`cancel`."""

    request: PreprocessRequest
    planned: tuple[str, ...] = ()
    scheduler: Optional[str] = None
    _state: JobSnapshot = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _token: CancelToken = field(init=False, default_factory=CancelToken)
    _thread: Optional[threading.Thread] = field(init=False, default=None)
    manifest: Optional[Manifest] = field(init=False, default=None)
    #: the owner's secret handle of the job (the app keeps it in the session and the page URL): who does
    #: not hold it can neither see nor cancel the job
    token: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(16))

    def __post_init__(self) -> None:
        run_id = self.request.run_id or new_run_id()
        self.request = self.request.model_copy(update={"run_id": run_id})
        self._state = JobSnapshot(
            job_id=run_id, run_id=run_id, run_dir=Path(self.request.out_dir) / run_id, status="running",
            fraction=0.0, stage="queued", message="Starting", acquisitions={a: "pending" for a in self.planned},
            acquisition_messages={}, error=None, started=time.time(), finished=None, cancel_requested=False,
        )

    def snapshot(self) -> JobSnapshot:
        """The current state (an immutable copy)."""
        with self._lock:
            return self._state

    def cancel(self) -> None:
        """Ask the run to stop at its next check; outputs already written stay, the rest is not renamed."""
        self._token.cancel()
        self._update(cancel_requested=True, message="Cancelling…")

    def wait(self, timeout: Optional[float] = None) -> JobSnapshot:
        """Block until the job ends (or ``timeout`` seconds); returns the state."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def start(self) -> "Job":
        """Start the worker thread (once)."""
        if self._thread is None:
            bound_malloc_arenas()  # the app's process: its runs' memory stays near what they use
            self._thread = threading.Thread(target=self._work, name=f"s2core-job-{self._state.job_id}", daemon=True)
            self._thread.start()
        return self

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _on_progress(self, event: ProgressEvent) -> None:
        with self._lock:
            acqs = dict(self._state.acquisitions)
            notes = dict(self._state.acquisition_messages)
            if event.acquisition:
                if event.outcome in ("completed", "failed", "skipped"):
                    acqs[event.acquisition] = event.outcome  # type: ignore[assignment]
                elif acqs.get(event.acquisition) in (None, "pending"):
                    acqs[event.acquisition] = "running"
                notes[event.acquisition] = event.message
            self._state = replace(self._state, fraction=max(self._state.fraction, min(1.0, event.fraction)),
                                  stage=event.stage, message=event.message, acquisitions=acqs,
                                  acquisition_messages=notes)

    def _work(self) -> None:
        status: JobStatus = "failed"
        error: Optional[str] = None
        try:
            self.manifest = preprocess(self.request, progress=self._on_progress, cancel=self._token,
                                       scheduler=self.scheduler or None)
            status = self.manifest.status  # type: ignore[assignment]
            if status in ("partial", "failed"):
                failed = [a for a in self.manifest.acquisitions if a.status == "failed"]
                error = f"{len(failed)} acquisition(s) failed; first: {failed[0].error}" if failed else None
        except Cancelled:
            status, error = "cancelled", "Cancelled: the outputs written before the cancel are kept."
        except S2CoreError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - the UI shows a message, the log keeps the trace
            log.exception("job %s failed unexpectedly", self._state.job_id)
            status, error = "failed", f"Unexpected {type(exc).__name__}: {exc}. The log has the details."
        self._finish(status, error)

    def _finish(self, status: JobStatus, error: Optional[str]) -> None:
        with self._lock:
            acqs = dict(self._state.acquisitions)
            if self.manifest is not None:
                for a in self.manifest.acquisitions:
                    acqs[a.id] = a.status
                for s in self.manifest.skipped:
                    acqs[s.acquisition_id] = "skipped"
            if status == "cancelled":
                acqs = {k: ("cancelled" if v in ("pending", "running") else v) for k, v in acqs.items()}
            message = {"completed": "Finished", "partial": "Finished with failures", "failed": "Failed",
                       "cancelled": "Cancelled", "running": "Running"}[status]
            self._state = replace(self._state, status=status, error=error, finished=time.time(), acquisitions=acqs,
                                  fraction=1.0 if status == "completed" else self._state.fraction, message=message,
                                  stage="done")


class JobManager:
    """All jobs of this process, newest first. Thread-safe."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, request: PreprocessRequest, planned: tuple[str, ...] = (), scheduler: Optional[str] = None) -> Job:
        """Start ``request`` in a background thread; ``planned`` are the acquisition ids a search found;
        ``scheduler`` (``local``, ``local:N``, ``tcp://…``) runs its acquisitions on Dask."""
        job = Job(request, planned, scheduler)
        with self._lock:
            self._jobs[job.snapshot().job_id] = job
        return job.start()

    def get(self, job_id: str) -> Optional[Job]:
        """A job by id."""
        with self._lock:
            return self._jobs.get(job_id)

    def owned(self, token: Optional[str]) -> Optional[Job]:
        """The job whose owner token is ``token`` (None for a wrong or missing token)."""
        if not token:
            return None
        with self._lock:
            return next((j for j in self._jobs.values() if secrets.compare_digest(j.token, str(token))), None)

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.snapshot().started, reverse=True)

    def running(self) -> list[Job]:
        """Jobs that have not finished."""
        return [j for j in self.jobs() if not j.snapshot().done]
