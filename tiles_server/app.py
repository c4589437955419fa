"""tiles_server.app: the FastAPI application (``create_app``), its run listing, health and errors."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import rasterio
import rio_tiler
import titiler.core
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from rasterio.errors import RasterioError
from rio_tiler.errors import TileOutsideBounds
from starlette.datastructures import QueryParams
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from titiler.core.errors import BadRequestError, add_exception_handlers
from titiler.core.factory import ColorMapFactory

import s2core
from s2core.runfolder.lifecycle import effective_status
from s2core.runfolder.stats import mask_agreement as stats_agreement
from tiles_server.factory import RunLayerTilerFactory, store_of
from tiles_server.gate import TileGate
from tiles_server.layers import LAYERS
from tiles_server.store import NotFound, RunEntry, RunStore

log = logging.getLogger(__name__)

#: Streamlit's default origins: the app in this project.
DEFAULT_CORS_ORIGINS = ("http://localhost:8501", "http://127.0.0.1:8501")


@dataclass(frozen=True)
class ServerSettings:
    """What the server serves and to whom."""

    root: Path
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    stats_max_size: int = 1024
    tile_slots: Optional[int] = None  # tiles drawn at once (default: one per core, at least 2)


def _run_doc(entry: RunEntry) -> dict[str, Any]:
    m = entry.manifest
    bands = list(m.parameters.get("bands") or [])
    acquisitions = []
    for a in m.acquisitions:
        layers = [name for name, spec in LAYERS.items() if spec.available(a.outputs, bands)] \
            if a.status == "completed" else []
        acquisitions.append({
            "id": a.id, "datetime": a.datetime, "status": a.status, "tiles": a.tiles,
            "valid_fraction": a.valid_fraction, "layers": layers,
            "mask_fractions": a.mask_fractions, "product_mask_fractions": a.product_mask_fractions,
            "error": a.error,
        })
    masks = m.parameters.get("masks") or {}
    return {
        "run_id": entry.run_id, "status": effective_status(entry.folder, m.status), "created": m.created, "finished": m.finished,
        "bounds": list(entry.bounds) if entry.bounds else None,
        "bands": bands, "resolution": m.parameters.get("resolution"),
        "cloud_model": masks.get("cloud_model"), "shadow_model": masks.get("shadow_model"),
        "acquisitions": acquisitions, "skipped": len(m.skipped),
    }


#: The largest width or height of an image the server draws on request (colormap legends).
MAX_IMAGE_PX = 2048


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


#: Exceptions whose message is safe to show, and their HTTP status (TiTiler's table, extended with ours).
STATUS_CODES: dict[type[Exception], int] = {
    BadRequestError: 400,
    TileOutsideBounds: 404,
    NotFound: 404,
}


class BoundedImages:
    """Colormap images have a size limit (an unbounded width was a 500, and 6.7 s for 8000²).

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) wraps ``receive`` in a
    task, which hides a client's disconnect from the endpoints (see :mod:`tiles_server.gate`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "/colorMaps/" in scope["path"]:
            query = QueryParams(scope.get("query_string", b""))
            for key in ("width", "height"):
                value = query.get(key)
                if value is not None and (not value.isdigit() or not 1 <= int(value) <= MAX_IMAGE_PX):
                    await _error(400, f"{key} must be a whole number of pixels from 1 to {MAX_IMAGE_PX}")(
                        scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _add_error_handlers(app: FastAPI) -> None:
    """Readable JSON errors (``{"detail": …}``) that never reveal server paths or internals: TiTiler's
    handler table for the errors whose message is safe, ours for the rest."""
    add_exception_handlers(app, STATUS_CODES)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid value')}")
        return _error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(RasterioError)
    def unreadable(request: Request, exc: RasterioError) -> JSONResponse:  # its message names server paths
        log.error("cannot read a layer file for %s: %s", request.url.path, exc)
        return _error(500, "the layer's file could not be read; the run may be incomplete or damaged")

    @app.exception_handler(Exception)
    def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error for %s", request.url.path)
        return _error(500, "internal error; the server log has the details")


def create_app(settings: ServerSettings) -> FastAPI:
    """The tile server for the runs under ``settings.root``."""
    app = FastAPI(
        title="s2core tiles",
        version=s2core.__version__,
        description="Map tiles, legends and statistics for the outputs of s2core runs. "
                    "Files are addressed by run id / acquisition id / layer only.",
    )
    app.state.store = RunStore(settings.root)
    app.state.tile_gate = TileGate(settings.tile_slots) if settings.tile_slots else TileGate()

    layers = RunLayerTilerFactory(stats_max_size=settings.stats_max_size)
    app.include_router(layers.router, prefix=layers.router_prefix, tags=["Layers"])
    colormaps = ColorMapFactory()
    app.include_router(colormaps.router, tags=["ColorMaps"])

    @app.get("/healthz", tags=["Health"])
    def health(request: Request) -> dict[str, Any]:
        """Liveness and versions (the root path is not disclosed)."""
        store = store_of(request)
        return {"status": "ok", "root_exists": store.root.is_dir(), "tiles": request.app.state.tile_gate.counts(),
                "versions": {"s2core": s2core.__version__, "titiler.core": titiler.core.__version__,
                             "rio-tiler": rio_tiler.__version__, "rasterio": rasterio.__version__,
                             "gdal": rasterio.__gdal_version__}}

    @app.get("/runs", tags=["Runs"])
    def runs(store: RunStore = Depends(store_of)) -> JSONResponse:
        """The runs under the root, newest first, with their acquisitions and layers."""
        return JSONResponse([_run_doc(e) for e in store.runs()], headers={"Cache-Control": "no-store"})

    @app.get("/runs/{run_id}", tags=["Runs"])
    def run(run_id: str, store: RunStore = Depends(store_of)) -> JSONResponse:
        """One run."""
        return JSONResponse(_run_doc(store.run(run_id)), headers={"Cache-Control": "no-store"})

    @app.get("/runs/{run_id}/{acquisition_id}/agreement", tags=["Runs"])
    def mask_agreement(run_id: str, acquisition_id: str, store: RunStore = Depends(store_of)) -> dict[str, Any]:
        """Model mask vs product mask: confusion matrix (rows model), IoU, class percentages."""
        model = store.file(run_id, acquisition_id, "mask")
        product = store.file(run_id, acquisition_id, "product_mask")
        return {"acquisition": acquisition_id, **asdict(stats_agreement(model, product))}

    _add_error_handlers(app)
    app.add_middleware(BoundedImages)
    app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET"],
                       allow_headers=["*"], allow_credentials=False)
    return app
