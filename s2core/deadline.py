"""s2core.deadline: run a blocking call with a deadline (network libraries' own timeouts bound one socket
read, not a whole answer that trickles in)."""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def run_with_deadline(fn: Callable[[], T], seconds: float, name: str) -> T:
    """Run ``fn`` in a daemon thread and give up waiting after ``seconds`` (:class:`TimeoutError`).

    The thread is left to finish on its own (its socket timeouts end it); its result is dropped.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        raise TimeoutError(name)
    if "error" in box:
        raise box["error"]
    return box["value"]
