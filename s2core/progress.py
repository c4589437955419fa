"""s2core.progress: progress events, callbacks and cooperative cancellation."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

from s2core.errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        stage: ``search``, ``select``, ``read``, ``write``, ``done``.
        fraction: overall completion in [0, 1].
        message: a short human-readable line (e.g. ``"2023-08-15: read B04 (3/10)"``).
        acquisition: the acquisition id the event is about, if any.
        outcome: set once an acquisition has ended: ``completed``, ``failed`` or ``skipped``.
    """

    stage: str
    fraction: float
    message: str
    acquisition: Optional[str] = None
    outcome: Optional[str] = None


ProgressCallback = Callable[[ProgressEvent], None]


def null_progress(_: ProgressEvent) -> None:
    """A progress callback that ignores every event."""


class CancelToken:
    """A thread-safe flag; :meth:`raise_if_cancelled` is called between units of work.

    Example:
        >>> token = CancelToken()
        >>> token.cancel()
        >>> token.cancelled
        True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop at the next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` has been called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~s2core.errors.Cancelled` when cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("The run was cancelled; outputs already completed are kept in the run folder.")


def scaled(callback: ProgressCallback, lo: float, hi: float, prefix: str = "") -> ProgressCallback:
    """A callback that maps a sub-task's [0, 1] progress into [lo, hi] of ``callback`` (one bar for many runs)."""

    def emit(event: ProgressEvent) -> None:
        callback(ProgressEvent(event.stage, lo + (hi - lo) * event.fraction, prefix + event.message,
                               event.acquisition, event.outcome))

    return emit
