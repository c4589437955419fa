"""Real servers on loopback for tests and benchmarks.

- :class:`AssetServer`: a Starlette static file server that honours HTTP ``Range``
  (so GDAL's ``/vsicurl/`` range reads are real), counts bytes sent, and has two extra
  mounts: ``/stall/...`` never answers (timeouts) and ``/signed/...`` demands a rotating
  ``?token=`` (signing and re-signing).
- :class:`PgStacServer`: stac-fastapi-pgstac (the server software Planetary Computer runs)
  over pgstac in a throwaway PostgreSQL + PostGIS cluster.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.requests = 0
        self.ranged = 0
        self.log: list[tuple[str, str]] = []  # (path, Range header) of each request

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent = self.requests = self.ranged = 0
            self.log = []


class _ThreadedUvicorn:
    """An ASGI app served by uvicorn on a free loopback port in a daemon thread (a context manager)."""

    port: int

    def _serve(self, app: Any, name: str) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                                timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=name)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):  # noqa: ANN204 - the subclass
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


class AssetServer(_ThreadedUvicorn):
    """Serve ``root`` over HTTP on loopback in a background thread.

    ``/files/<path>``: plain files with Range support. ``/stall/<path>``: hangs.
    ``/signed/<path>?token=T``: 403 unless ``T`` is the current :attr:`token`.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.counter = _Counter()
        self.token = "t0"
        self.tokens_issued = 0
        self.forbidden = 0
        static = StaticFiles(directory=str(self.root))

        async def stall(request: Request) -> Response:
            await asyncio.sleep(3600)
            return PlainTextResponse("late")

        server = self

        async def signed(scope: dict[str, Any], receive: Any, send: Any) -> None:
            query = dict(p.split("=", 1) for p in scope.get("query_string", b"").decode().split("&") if "=" in p)
            if query.get("token") != server.token:
                server.forbidden += 1
                await PlainTextResponse("AuthenticationFailed", status_code=403)(scope, receive, send)
                return
            await static(scope, receive, send)

        app = Starlette(routes=[
            Route("/stall/{path:path}", stall),
            Mount("/signed", app=signed),
            Mount("/files", app=static),
        ])
        counter = self.counter

        async def counting(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = dict(scope.get("headers") or [])
            with counter.lock:
                counter.requests += 1
                counter.log.append((f"{scope.get('method', '')} {scope.get('path', '')}",
                                    headers.get(b"range", b"").decode("latin-1")))
                if b"range" in headers:
                    counter.ranged += 1

            async def counting_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.body":
                    with counter.lock:
                        counter.bytes_sent += len(message.get("body", b""))
                await send(message)

            await app(scope, receive, counting_send)

        self._serve(counting, "asset-server")

    def new_token(self) -> str:
        """Rotate the accepted token (old signed URLs now get 403)."""
        self.tokens_issued += 1
        self.token = f"t{self.tokens_issued}"
        return self.token


def postgres_available() -> Optional[str]:
    """``None`` when PostgreSQL + PostGIS can be started here, else the reason."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 binaries not found in {PG_BIN} (apt-get install postgresql-15 postgresql-15-postgis-3)"
    if not list(Path("/usr/share/postgresql/15/extension").glob("postgis.control")):
        return "PostGIS for PostgreSQL 15 is not installed (apt-get install postgresql-15-postgis-3)"
    return None


class PgStacServer:
    """A real STAC API: stac-fastapi-pgstac over pgstac in a throwaway PostgreSQL cluster."""

    def __init__(self, collections: Iterable[dict[str, Any]], items: Iterable[dict[str, Any]]) -> None:
        self.collections = list(collections)
        self.items = list(items)
        self.tmp = Path(tempfile.mkdtemp(prefix="pgstac-"))
        self.pg_port = free_port()
        self.api_port = free_port()
        self._api: Optional[subprocess.Popen] = None
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgis"

    @property
    def url(self) -> str:
        """The STAC API root URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def _as_postgres(self, *cmd: str) -> None:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    def __enter__(self) -> "PgStacServer":
        data = self.tmp / "pgdata"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
            shutil.chown(data, "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.tmp / "pg.log"), "-w", "start",
            "-o", f"-p {self.pg_port} -c listen_addresses=127.0.0.1 -c fsync=off -c unix_socket_directories={self.tmp}",
        )
        env = {**os.environ, "PGPASSWORD": "unused"}
        psql = ["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*psql, "-c", "CREATE DATABASE postgis"], check=True, capture_output=True, env=env)
        pypgstac = [sys.executable, "-m", "pypgstac.pypgstac"] if shutil.which("pypgstac") is None else ["pypgstac"]
        bindir = Path(sys.executable).parent
        if (bindir / "pypgstac").exists():
            pypgstac = [str(bindir / "pypgstac")]
        subprocess.run([*pypgstac, "migrate", "--dsn", self.dsn], check=True, capture_output=True, env=env, timeout=300)
        sql = (
            "SET search_path TO pgstac, public;"
            "INSERT INTO pgstac.pgstac_settings (name, value) VALUES ('context', 'on') "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value;"
            "INSERT INTO pgstac.queryables (name, definition, property_wrapper) VALUES "
            "('eo:cloud_cover', '{\"type\": \"number\"}', 'to_float') ON CONFLICT DO NOTHING;"
        )
        res = subprocess.run([*psql, "-d", "postgis", "-c", sql], capture_output=True, env=env)
        if res.returncode:
            raise RuntimeError(f"pgstac setup failed: {res.stderr.decode(errors='replace')}")
        for kind, docs in (("collections", self.collections), ("items", self.items)):
            path = self.tmp / f"{kind}.ndjson"
            path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
            subprocess.run([*pypgstac, "load", kind, str(path), "--dsn", self.dsn, "--method", "upsert"],
                           check=True, capture_output=True, env=env, timeout=300)
        api_env = {**env, "PGUSER": "postgres", "PGPASSWORD": "unused", "PGHOST": "127.0.0.1",
                   "PGPORT": str(self.pg_port), "PGDATABASE": "postgis", "POSTGRES_USER": "postgres",
                   "POSTGRES_PASS": "unused", "POSTGRES_HOST_READER": "127.0.0.1", "POSTGRES_HOST_WRITER": "127.0.0.1",
                   "POSTGRES_PORT": str(self.pg_port), "POSTGRES_DBNAME": "postgis"}
        self._api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning"],
            cwd=self.tmp, env=api_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        import requests

        deadline = time.monotonic() + 60
        while True:
            if self._api.poll() is not None:
                out = self._api.stdout.read().decode(errors="replace") if self._api.stdout else ""
                raise RuntimeError(f"stac-fastapi-pgstac exited: {out[-2000:]}")
            try:
                if requests.get(self.url + "/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("stac-fastapi-pgstac did not start within 60 s")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._api is not None:
            self._api.terminate()
            try:
                self._api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._api.kill()
        try:
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.tmp / "pgdata"), "-m", "immediate", "stop")
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


class TilesServer:
    """``python -m tiles_server --root ROOT`` in a subprocess on a free loopback port (the real CLI)."""

    def __init__(self, root: Path, *extra_args: str) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.extra_args = extra_args
        self.proc: Optional[subprocess.Popen] = None
        self.log = tempfile.NamedTemporaryFile(prefix="tiles-server-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "TilesServer":
        import requests

        cmd = [sys.executable, "-m", "tiles_server", "--root", str(self.root), "--port", str(self.port),
               "--log-level", "warning", *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tiles_server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("tiles_server did not start in 60 s")
            time.sleep(0.2)

    def output(self) -> str:
        """What the server printed so far."""
        return Path(self.log.name).read_text(errors="replace")

    def __exit__(self, *exc: Any) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class FaultServer(_ThreadedUvicorn):
    """A Range-capable file server on loopback that injects faults, chosen by the first path segment.

    ``/<mode>/<path>`` serves ``root/<path>`` with one of these behaviours (counted per mode and path):

    ==============  =====================================================================================
    ``ok``          plain file, Range honoured
    ``once503``     the first request of each file gets 503, later ones are served
    ``half500``     every other request (server-wide) gets 500 (alternating 500 and 503)
    ``all503``      every request gets 503
    ``once403``     the first request of each file gets 403 (an expired token), later ones are served
    ``retry429``    a rate limit: requests of a file in its first :attr:`retry_after` seconds get 429 and
                    ``Retry-After`` (the seconds left)
    ``truncated``   the file cut to its first 40 %: ranges past that get 416
    ``corrupt``     every byte after the first 4 kB XOR 0x5A (the headers parse, the tiles do not)
    ``html``        200 with an HTML page, whatever was asked
    ``drip``        the answer trickles out at 50 bytes/s
    ``stall``       never answers
    ``redirect``    302 to the same file under ``ok`` on ``localhost`` (another host name for the same server)
    ==============  =====================================================================================
    """

    MODES = ("ok", "once503", "half500", "all503", "once403", "retry429", "truncated", "corrupt", "html", "drip",
             "stall", "redirect")

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.port = free_port()
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.statuses: dict[str, list[int]] = {}
        self._toggle = 0
        self.retry_after = 1  #: seconds the rate limit of ``retry429`` lasts (and its Retry-After says)
        self.limited: dict[str, float] = {}
        server = self

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            parts = scope["path"].lstrip("/").split("/", 1)
            mode, rel = (parts + [""])[:2]
            path = (self.root / rel).resolve()
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers") or []}
            with server.lock:
                n = server.requests.get((mode, rel), 0)
                server.requests[(mode, rel)] = n + 1
                server._toggle += 1
                toggle = server._toggle

            async def respond(status: int, body: bytes = b"", extra: Optional[dict[str, str]] = None,
                              drip: bool = False) -> None:
                server.statuses.setdefault(mode, []).append(status)
                hdrs = [(b"content-length", str(len(body)).encode()), (b"accept-ranges", b"bytes")]
                hdrs += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
                await send({"type": "http.response.start", "status": status, "headers": hdrs})
                if drip:
                    for i in range(0, len(body), 5):
                        await send({"type": "http.response.body", "body": body[i:i + 5], "more_body": True})
                        await asyncio.sleep(0.1)
                    await send({"type": "http.response.body", "body": b""})
                else:
                    await send({"type": "http.response.body", "body": body})

            if mode not in self.MODES or not path.is_file() or not path.is_relative_to(self.root):
                await respond(404, b"not found")
                return
            if mode == "stall":
                await asyncio.sleep(3600)
                return
            if mode == "redirect":
                await respond(302, b"", {"location": f"http://localhost:{server.port}/ok/{rel}"})
                return
            if (mode == "once503" and n == 0) or mode == "all503":
                await respond(503, b"Service Unavailable")
                return
            if mode == "half500" and toggle % 2:
                await respond(500 if toggle % 4 == 1 else 503, b"Internal Server Error")
                return
            if mode == "once403" and n == 0:
                await respond(403, b"AuthenticationFailed: Server failed to authenticate the request.")
                return
            if mode == "retry429":  # a rate limit: every request of the first retry_after seconds gets 429
                now = time.monotonic()
                first = server.limited.setdefault(rel, now)
                if now - first < server.retry_after:
                    wait = max(1, math.ceil(server.retry_after - (now - first)))
                    await respond(429, b"Too Many Requests", {"retry-after": str(wait)})
                    return
            if mode == "html":
                await respond(200, b"<html><body><h1>Welcome to our portal</h1></body></html>",
                              {"content-type": "text/html"})
                return
            data = path.read_bytes()
            if mode == "truncated":
                data = data[: int(len(data) * 0.4)]
            elif mode == "corrupt":
                data = data[:4096] + bytes(b ^ 0x5A for b in data[4096:])
            rng = headers.get("range", "")
            if rng.startswith("bytes="):
                first, _, last = rng[6:].split(",")[0].partition("-")
                start = int(first) if first else max(0, len(data) - int(last))
                end = min(len(data) - 1, int(last)) if (first and last) else len(data) - 1
                if start >= len(data):
                    await respond(416, b"", {"content-range": f"bytes */{len(data)}"})
                    return
                await respond(206, data[start:end + 1], {"content-range": f"bytes {start}-{end}/{len(data)}"},
                              drip=mode == "drip")
                return
            await respond(200, data, drip=mode == "drip")

        self._serve(app, "fault-server")

    def seen(self, mode: str) -> int:
        """Requests the server answered under ``mode``."""
        with self.lock:
            return sum(n for (m, _), n in self.requests.items() if m == mode)
