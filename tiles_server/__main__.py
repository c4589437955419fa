"""``python -m tiles_server --root DIR --host 127.0.0.1 --port 8001``: serve run outputs as map tiles."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Optional

import uvicorn

from tiles_server.app import DEFAULT_CORS_ORIGINS, ServerSettings, create_app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tiles_server", description=__doc__)
    p.add_argument("--root", required=True, type=Path,
                   help="folder holding the runs (the --out of `python -m s2core run`)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", default=8001, type=int, help="port (default 8001)")
    p.add_argument("--cors-origin", action="append", dest="cors_origins", metavar="ORIGIN",
                   help="an origin allowed to fetch tiles from a browser; repeat for several "
                        f"(default: {', '.join(DEFAULT_CORS_ORIGINS)})")
    p.add_argument("--cache-mb", default=512, type=int,
                   help="GDAL block cache in MB shared by all requests (default 512; env GDAL_CACHEMAX wins)")
    p.add_argument("--tile-slots", default=None, type=int, metavar="N",
                   help="tiles drawn at once; the others wait, and are dropped if their client leaves meanwhile "
                        "(default: one per core, at least 2)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def _port_free(host: str, port: int) -> Optional[str]:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def main(argv: Optional[list[str]] = None) -> int:
    """Validate the arguments, then run uvicorn until interrupted."""
    parser = _parser()
    args = parser.parse_args(argv)
    root: Path = args.root
    if not root.is_dir():
        parser.exit(2, f"tiles_server: error: --root {root}: no such folder; give the folder that "
                       "`python -m s2core run --out` writes to (create it first if no run exists yet)\n")
    if not 0 < args.port < 65536:
        parser.exit(2, f"tiles_server: error: --port {args.port}: give a port between 1 and 65535\n")
    problem = _port_free(args.host, args.port)
    if problem:
        parser.exit(2, f"tiles_server: error: cannot listen on {args.host}:{args.port} ({problem}); "
                       "choose another --port or stop the process using it\n")
    if args.tile_slots is not None and not 1 <= args.tile_slots <= 256:
        parser.exit(2, f"tiles_server: error: --tile-slots {args.tile_slots}: give a number from 1 to 256\n")
    os.environ.setdefault("GDAL_CACHEMAX", str(args.cache_mb))  # process-wide block cache, read once by GDAL
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServerSettings(root=root, cors_origins=tuple(args.cors_origins or DEFAULT_CORS_ORIGINS),
                              tile_slots=args.tile_slots)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
