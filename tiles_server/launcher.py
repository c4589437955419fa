"""tiles_server.launcher: find a running tile server or start one as a subprocess (for the app)."""

from __future__ import annotations

import atexit
import logging
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import requests

log = logging.getLogger(__name__)


@dataclass
class TileServerHandle:
    """A tile server the app can use: its URL, and the process when this app started it."""

    url: str
    root: Path
    process: Optional[subprocess.Popen] = None

    @property
    def started_here(self) -> bool:
        """True when this process started the server."""
        return self.process is not None

    def is_up(self, timeout: float = 2.0) -> bool:
        """Whether ``/healthz`` answers."""
        return health(self.url, timeout) is not None

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def health(url: str, timeout: float = 2.0) -> Optional[dict]:
    """The server's ``/healthz`` document, or None when nothing answers."""
    try:
        resp = requests.get(f"{url.rstrip('/')}/healthz", timeout=timeout)
        return resp.json() if resp.ok else None
    except (requests.RequestException, ValueError):
        return None


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_server(root: Path, host: str = "127.0.0.1", port: int = 8001, timeout: float = 60.0,
                  url: Optional[str] = None) -> TileServerHandle:
    """A tile server for ``root``: the one at ``url``/``host:port`` if it answers, else a new subprocess.

    When the port is taken by something that is not a tile server, a free port is used instead.
    Raises RuntimeError (with the server's output) when a started server does not come up.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = url or f"http://{host}:{port}"
    if health(base) is not None:
        return TileServerHandle(base, root)
    if _port_in_use(host, port):
        port = _free_port(host)
    base = f"http://{host}:{port}"
    cmd = [sys.executable, "-m", "tiles_server", "--root", str(root), "--host", host, "--port", str(port),
           "--log-level", "warning"]
    log.info("starting the tile server: %s", " ".join(cmd))
    logfile = tempfile.NamedTemporaryFile(prefix="tiles-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    handle = TileServerHandle(base, root, proc)
    atexit.register(handle.stop)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = Path(logfile.name).read_text(errors="replace")
            raise RuntimeError(f"the tile server exited: {out.strip()[-500:]}")
        if handle.is_up(1.0):
            return handle
        time.sleep(0.2)
    handle.stop()
    raise RuntimeError(f"the tile server did not answer on {base} within {timeout:.0f} s")
