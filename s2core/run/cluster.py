"""s2core.run.cluster: run acquisitions as Dask tasks on a LocalCluster or an existing scheduler.

Each acquisition is one task: :func:`acquisition_task` calls the same pure
``process_acquisition(request, acquisition, grid)`` that runs in-process, on a worker that
writes its outputs straight into the run folder (a file system every worker sees). The
client gathers the records and the caller assembles the manifest. Tasks that raise are
retried ``retries`` times by the scheduler (also when their worker dies) and then reported
as failed. Progress from the workers reaches the caller's callback through Dask's structured
events; cancellation sets a Dask ``Event`` that running tasks check between units of work,
and cancels the queued ones.

ONNX Runtime sessions are cached per worker process (``s2core.masks.engine.get_session``), so a
model is loaded once per worker, not per task.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from s2core.allocator import MALLOC_ARENAS
from s2core.errors import Cancelled, InvalidParameter
from s2core.settings import cpu_count, get_settings
from s2core.progress import CancelToken, ProgressCallback, ProgressEvent
from s2core.run.acquisition import process_acquisition

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from s2core.model.scene import Acquisition
    from s2core.run.recorder import RunState

log = logging.getLogger(__name__)

#: Retries of a failing task before it is reported as failed.
DEFAULT_RETRIES = 2
#: Memory limit of each LocalCluster worker (Dask pauses, then restarts, a worker above it).


@dataclass(frozen=True)
class SchedulerSpec:
    """``local`` (with a worker count) or the address of an existing scheduler."""

    local: bool
    workers: int = 2
    address: Optional[str] = None


#: The address schemes of Dask's comm layer.
DASK_SCHEMES = ("tcp", "tls", "inproc", "ws", "wss", "ucx")


def parse_scheduler(spec: str, workers: int = 2) -> SchedulerSpec:
    """``local``, ``local:N`` or ``tcp://host:port`` (also ``tls://``, ``inproc://``)."""
    text = spec.strip()
    if text.lower() == "local" or text.lower().startswith("local:"):
        n = workers
        if ":" in text:
            try:
                n = int(text.split(":", 1)[1])
            except ValueError:
                raise InvalidParameter(f"Scheduler {spec!r}: write local:N with N a number of workers.") from None
        if not 1 <= n <= 256:
            raise InvalidParameter(f"Scheduler {spec!r}: between 1 and 256 workers.")
        return SchedulerSpec(local=True, workers=n)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in DASK_SCHEMES:
            raise InvalidParameter(
                f"Scheduler {spec!r}: {scheme}:// is not a Dask protocol; use {', '.join(s + '://' for s in DASK_SCHEMES)}"
                " (e.g. tcp://10.0.0.5:8786), or 'local'."
            )
        return SchedulerSpec(local=False, address=text)
    raise InvalidParameter(
        f"Scheduler {spec!r} is not understood: use 'local', 'local:N' or the address of a running Dask "
        "scheduler such as tcp://10.0.0.5:8786."
    )


@contextmanager
def cluster_client(scheduler: "str | Client", workers: int = 2) -> Iterator["Client"]:
    """A ``distributed.Client`` for ``scheduler`` (a given Client is used as is, and not closed)."""
    from distributed import Client, LocalCluster  # lazy: distributed loads only when Dask is used

    if isinstance(scheduler, Client):
        yield scheduler
        return
    spec = parse_scheduler(str(scheduler), workers)
    if spec.local:
        with _workers_skip_main(), LocalCluster(
                n_workers=spec.workers, threads_per_worker=1, processes=True, memory_limit=get_settings().worker_memory,
                dashboard_address=":0", env=worker_env(max(1, cpu_count() // spec.workers))) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(spec.address, timeout=30)
    except OSError as exc:
        raise InvalidParameter(
            f"Cannot reach the Dask scheduler at {spec.address} ({exc}): check the address, or use 'local'."
        ) from None
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _workers_skip_main() -> Iterator[None]:
    """While a LocalCluster lives, processes it spawns (workers, also restarted ones) do not re-run the
    caller's ``__main__``. Under Streamlit the page being run *is* ``__main__``; re-running it in a worker
    would break the worker. Tasks never need it: Dask pickles functions of ``__main__`` by value."""
    import multiprocessing.spawn as mp_spawn  # lazy: only when patching worker start-up

    original = mp_spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    mp_spawn.get_preparation_data = without_main
    try:
        yield
    finally:
        mp_spawn.get_preparation_data = original


def worker_env(threads: int) -> dict[str, str]:
    """Environment of a worker process: ONNX Runtime and GDAL use ``threads`` threads, not every core; glibc
    keeps :data:`~s2core.allocator.MALLOC_ARENAS` malloc arenas (unless the user set their own)."""
    return {"S2CORE_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "GDAL_NUM_THREADS": str(threads),
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX") or str(MALLOC_ARENAS)}


class ClusterCancel(CancelToken):
    """A cancel token that also follows a Dask ``Event`` (checked at most every half second)."""

    def __init__(self, event_name: str) -> None:
        super().__init__()
        self._name = event_name
        self._checked = 0.0

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        now = time.monotonic()
        if now - self._checked > 0.5:
            self._checked = now
            try:
                from distributed import Event  # lazy: distributed loads only when Dask is used

                if Event(self._name).is_set():
                    self._event.set()
            except Exception:  # noqa: BLE001 - no scheduler reachable: keep going, the client cancels futures
                pass
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("Run cancelled: outputs of finished acquisitions are kept.")


def acquisition_task(request: Any, acquisition: "Acquisition", grid: Any, run_dir: Path, sign: Any,
                     topic: str, cancel_event: str, span: tuple[float, float]) -> Any:
    """One acquisition on a worker: ``process_acquisition`` with progress sent back as Dask events."""
    from distributed import get_worker  # lazy: distributed loads only when Dask is used


    worker = get_worker()

    def progress(event: ProgressEvent) -> None:
        worker.log_event(topic, {"stage": event.stage, "fraction": event.fraction, "message": event.message,
                                 "acquisition": event.acquisition, "worker": worker.address})

    progress(ProgressEvent("read", span[0], f"{acquisition.date}: started on worker {worker.address}",
                           acquisition.id))
    return process_acquisition(request, acquisition, grid, run_dir, sign=sign, cancel=ClusterCancel(cancel_event),
                               progress=progress, fraction=span)


def run_on_cluster(client: "Client", runs: Sequence["RunState"], cancel: CancelToken, emit: ProgressCallback,
                   retries: int = DEFAULT_RETRIES) -> Iterator[tuple[int, "Acquisition", Any]]:
    """Submit every acquisition of ``runs`` as one task graph; yield ``(run index, acquisition, outcome)``.

    The outcome is the task's AcquisitionRecord, or the exception it raised after its retries.
    Raises :class:`Cancelled` (after cancelling the tasks) when ``cancel`` is set.
    """
    from distributed import Event, wait  # lazy: distributed loads only when Dask is used

    token = secrets.token_hex(4)
    topic, event_name = f"s2core-progress-{token}", f"s2core-cancel-{token}"
    futures: dict[Any, tuple[int, "Acquisition"]] = {}
    counter = {"done": 0}

    def overall() -> float:
        return 0.05 + 0.93 * counter["done"] / max(1, len(futures))

    def on_event(event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        emit(ProgressEvent(msg["stage"], overall(), msg["message"], msg.get("acquisition")))

    client.subscribe_topic(topic, on_event)
    for r, run in enumerate(runs):
        for k, acq in enumerate(run.acquisitions):
            fut = client.submit(acquisition_task, run.request, acq, run.grid, run.run_dir, run.catalog.sign, topic,
                                event_name, run.span(k), key=f"acquisition-{acq.id}-{token}-{r}", retries=retries,
                                pure=False)
            futures[fut] = (r, acq)
    emit(ProgressEvent("read", 0.05, f"{len(futures)} task(s) submitted to {client.scheduler.address}"))
    remaining = set(futures)
    try:
        while remaining:
            if cancel.cancelled:
                raise Cancelled("Run cancelled: outputs of finished acquisitions are kept.")
            try:
                done, _ = wait(list(remaining), timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for fut in done:
                remaining.discard(fut)
                r, acq = futures[fut]
                if fut.status == "cancelled":
                    continue
                outcome = fut.result() if fut.status == "finished" else fut.exception()
                counter["done"] += 1
                yield r, acq, outcome
    except Cancelled:
        Event(event_name, client=client).set()
        client.cancel(list(futures))
        raise
    finally:
        client.unsubscribe_topic(topic)
