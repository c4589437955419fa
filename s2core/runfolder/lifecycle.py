"""s2core.runfolder.lifecycle: a run folder's lock, its real status, and the leftovers of a dead run.

A live run holds an exclusive ``flock`` on ``<run>/.lock`` (the file also names the pid, host and start
time, for messages). The operating system drops the lock when the process dies, however it dies
(SIGKILL, power loss), so a manifest that still says ``running`` without a held lock is a run that was
interrupted: :func:`effective_status` says so to the CLI, the app and the tile server.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Optional

from s2core.errors import RunInUse

LOCK_NAME = ".lock"


class RunLock:
    """The exclusive lock of one run folder, held from :meth:`acquire` to :meth:`release`.

    Example:
        >>> lock = RunLock(run_dir).acquire()   # doctest: +SKIP
        >>> ...; lock.release()                 # doctest: +SKIP
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock, or :class:`RunInUse` naming the process that holds it."""
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = lock_holder(self.run_dir) or {}
            raise RunInUse(
                f"Run {self.run_dir.name} is being written by another process (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('started', '?')}): wait for it to end, or choose "
                "another run_id."
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go and remove the lock file, so a finished run folder holds only its outputs (idempotent)."""
        if self._fd is not None:
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)  # while still held: nobody else is inside
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None


def lock_holder(run_dir: Path) -> Optional[dict[str, Any]]:
    """Who holds the run's lock (pid, host, started), or None when no live process does."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: read who holds it
            try:
                return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def effective_status(run_dir: Path, status: str) -> str:
    """``status`` as recorded, except that a ``running`` run whose lock no process holds is ``interrupted``."""
    if status == "running" and lock_holder(run_dir) is None:
        return "interrupted"
    return status


def remove_stale_parts(run_dir: Path) -> int:
    """Delete what a dead run left half-written (``.<name>.<random>.part`` files and ``.*.tmp`` folders) in the
    run folder and its acquisition folders; returns how many. Call only while holding the lock."""
    removed = 0
    run_dir = Path(run_dir)
    for folder in (run_dir, *(p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink())):
        for entry in folder.iterdir():
            if not entry.name.startswith("."):
                continue
            if entry.is_file() and entry.name.endswith(".part"):
                entry.unlink(missing_ok=True)
                removed += 1
            elif entry.is_dir() and not entry.is_symlink() and entry.name.endswith(".tmp"):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed
