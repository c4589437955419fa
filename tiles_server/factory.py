"""tiles_server.factory: the run-layer endpoints, as a TiTiler factory.

Like TiTiler's ``TilerFactory`` but addressed by ``/runs/{run_id}/{acquisition_id}/{layer}``
instead of a ``url=`` parameter: the dataset comes from :class:`~tiles_server.store.RunStore`,
the pixels from rio-tiler's ``Reader``, and only the layer's documented knobs are accepted.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlencode

import numpy as np
from attrs import define
from fastapi import Depends, Query, Request
from morecantile import TileMatrixSet
from morecantile import tms as default_tms
from rio_tiler.colormap import cmap
from rio_tiler.errors import TileOutsideBounds
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from titiler.core.errors import BadRequestError
from titiler.core.factory import BaseFactory

from s2core.runfolder.manifest import AcquisitionRecord
from s2core.runfolder.stats import class_stats, probability_stats, value_counts
from tiles_server.gate import TileGate, client_gone
from tiles_server.layers import LAYERS, Layer, legend, normalized_difference
from tiles_server.proxy import forwarded_prefix
from tiles_server.rendering import Style, TileFormat, draw, encode, native_minzoom, open_layer, read_tile
from tiles_server.store import NotFound, RunEntry, RunStore

TILE_CACHE_CONTROL = "public, max-age=3600"
#: The status of a request whose client went away before its tile was drawn (nginx's "client closed request";
#: nobody reads it).
CLIENT_CLOSED = 499
MAX_ZOOM = 24
#: Tiles are drawn down to this many zoom levels below a layer's native minzoom; further out they are 404
#: (a z0 tile of a 120 m run took 89 s of CPU; z-4 below native takes well under a second).
ZOOM_OUT_LEVELS = 4


@dataclass(frozen=True)
class LayerSource:
    """A layer of one acquisition, resolved to a file inside the root."""

    layer: Layer
    path: Path
    bands: list[str]
    run: RunEntry
    acquisition: AcquisitionRecord
    versus: Optional[Path] = None  # the second file of a comparison layer


def store_of(request: Request) -> RunStore:
    """The application's run store."""
    return request.app.state.store


def layer_source(request: Request, run_id: str, acquisition_id: str, layer: str) -> LayerSource:
    """Path dependency: validated ids and layer name -> the file to read (or 404)."""
    spec = LAYERS.get(layer)
    if spec is None:
        raise NotFound(f"unknown layer {layer!r}; layers: {', '.join(LAYERS)}")
    store = store_of(request)
    entry, acq = store.acquisition(run_id, acquisition_id)
    bands = list(entry.manifest.parameters.get("bands") or [])
    if not spec.available(acq.outputs, bands):
        need = f" (needs bands {', '.join(spec.bands)})" if spec.bands else ""
        raise NotFound(f"layer {layer!r} is not available for {acquisition_id!r}{need}")
    versus = store.file(run_id, acquisition_id, spec.versus) if spec.versus else None
    return LayerSource(spec, store.file(run_id, acquisition_id, spec.role), bands, entry, acq, versus)


def tilesize_param(tilesize: Annotated[int, Query(description="Tile size in pixels: 256 or 512.")] = 256) -> int:
    """The tile size (256 or 512 pixels)."""
    if tilesize not in (256, 512):
        raise BadRequestError(f"tilesize={tilesize}: use 256 or 512")
    return tilesize


def _rescale(value: Optional[str]) -> Optional[tuple[float, float]]:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise BadRequestError(f"rescale={value!r}: give two numbers 'min,max', e.g. rescale=0,3000") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise BadRequestError(f"rescale={value!r}: max must be greater than min")
    return (lo, hi)


def style_params(
    rescale: Annotated[Optional[str], Query(description="Stretch 'min,max' (composites: DN, ndvi: index).")] = None,
    colormap: Annotated[Optional[str], Query(description="A rio-tiler colormap name (ndvi, probabilities).")] = None,
    minimum: Annotated[Optional[float], Query(alias="min", ge=0.0, le=1.0,
                                              description="Probabilities below this are transparent.")] = None,
    opacity: Annotated[float, Query(ge=0.0, le=1.0, description="Layer opacity 0-1.")] = 1.0,
) -> Style:
    """Rendering knobs from the query string."""
    if colormap is not None and colormap not in cmap.list():
        raise BadRequestError(f"colormap={colormap!r} is not a known colormap; GET /colorMaps lists them")
    return Style(rescale=_rescale(rescale), colormap=colormap, minimum=minimum, opacity=opacity)


@functools.lru_cache(maxsize=512)
def _exact_stats(path: str, mtime_ns: int, layer_name: str) -> dict[str, Any]:
    """Full-resolution statistics of a class or probability layer (cached per file version)."""
    layer = LAYERS[layer_name]
    counts = value_counts(Path(path))
    if layer.kind == "categorical":
        return asdict(class_stats(counts, {c.value: c.label for c in layer.classes}, layer.nodata))
    return asdict(probability_stats(counts, scale=layer.scale, nodata=layer.nodata))


def _sampled_band_stats(src: LayerSource, max_size: int) -> dict[str, Any]:
    with open_layer(src.path) as reader:
        img = reader.preview(indexes=src.layer.band_indexes(src.bands), max_size=max_size)
        full = (img.height, img.width) == (reader.height, reader.width)
    data, valid = img.array.data.astype(np.float64), img.mask > 0
    out: dict[str, Any] = {"sampled_size": [img.height, img.width], "valid_pixels": int(valid.sum()), "exact": full}
    if src.layer.kind == "index":
        values = normalized_difference(data[0][valid], data[1][valid])
        names = [src.layer.name]
    else:
        values = None
        names = list(src.layer.bands)
    bands: dict[str, Any] = {}
    for i, name in enumerate(names):
        v = values if values is not None else data[i][valid]
        if v.size == 0:
            bands[name] = None
            continue
        p2, p50, p98 = np.percentile(v, [2, 50, 98])
        bands[name] = {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
                       "p2": float(p2), "median": float(p50), "p98": float(p98)}
    out["bands"] = bands
    return out


def _tile_indexes_ok(tms: TileMatrixSet, z: int, x: int, y: int) -> bool:
    matrix = tms.matrix(z)
    return 0 <= x < matrix.matrixWidth and 0 <= y < matrix.matrixHeight


@define(kw_only=True)
class RunLayerTilerFactory(BaseFactory):
    """TileJSON, tiles, legend and statistics for ``/runs/{run_id}/{acquisition_id}/{layer}``."""

    tms: TileMatrixSet = default_tms.get("WebMercatorQuad")
    router_prefix: str = "/runs/{run_id}/{acquisition_id}/{layer}"
    stats_max_size: int = 1024

    def url_for(self, request: Request, name: str, **path_params: Any) -> str:
        """TiTiler's ``url_for``, under the path this app is mounted at (Starlette's ``base_url`` is the
        top-level app's, which leaves out a mount: the Streamlit app serves this one under ``/tiles``) and
        under the prefix that a reverse proxy stripped (``X-Forwarded-Prefix``)."""
        root = forwarded_prefix(request.headers) + str(request.scope.get("root_path", "")).rstrip("/")
        base = request.base_url.replace(path=root + "/")
        relative = super().url_for(request, name, **path_params)[len(str(request.base_url)):]
        return str(base) + relative

    def register_routes(self) -> None:
        """Register the routes (TiTiler's pattern: endpoints are closures over the factory)."""
        self.tilejson()
        self.tile()
        self.legend()
        self.statistics()

    def tile(self) -> None:
        """``GET …/tiles/{z}/{x}/{y}.{format}`` (``png`` or ``webp``)."""

        @self.router.get(
            "/tiles/{z}/{x}/{y}.{format}", name="tile", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/webp": {}},
                             "description": "An RGBA tile: PNG, or lossless WebP (smaller, faster to encode)."},
                       404: {"description": "Unknown run/acquisition/layer, or a tile outside the layer's bounds."}},
        )
        async def tile(
            request: Request,
            z: int, x: int, y: int,
            format: TileFormat,
            src: Annotated[LayerSource, Depends(layer_source)],
            style: Annotated[Style, Depends(style_params)],
            tilesize: Annotated[int, Depends(tilesize_param)],
        ) -> Response:
            if not 0 <= z <= MAX_ZOOM:
                raise BadRequestError(f"zoom {z} is outside 0-{MAX_ZOOM}")
            if not _tile_indexes_ok(self.tms, z, x, y):
                raise TileOutsideBounds(f"tile {z}/{x}/{y} does not exist")
            gate: TileGate = request.app.state.tile_gate
            async with gate.slot():
                if await client_gone(request):  # Leaflet drops the tiles a pan or zoom left behind
                    gate.abandoned += 1
                    return Response(status_code=CLIENT_CLOSED)
                content = await run_in_threadpool(self.draw_tile, src, style, tilesize, x, y, z, format)
                gate.drawn += 1
            return Response(content, media_type=format.media_type, headers={"Cache-Control": TILE_CACHE_CONTROL})

    def draw_tile(self, src: LayerSource, style: Style, tilesize: int, x: int, y: int, z: int,
                  format: TileFormat = TileFormat.png) -> bytes:
        """One tile, encoded (blocking: file reads and encoding)."""
        native = native_minzoom(src.path, self.tms)
        if z < native - ZOOM_OUT_LEVELS:  # a world-sized tile of a field-sized raster: minutes of CPU for a dot
            raise TileOutsideBounds(f"zoom {z} is too far out for this layer: its tiles start at zoom "
                                    f"{max(0, native - ZOOM_OUT_LEVELS)}")
        image = read_tile(src.layer, src.path, src.bands, self.tms, x, y, z, tilesize, src.versus)
        return encode(draw(src.layer, image, style), format)

    def tilejson(self) -> None:
        """``GET …/tilejson.json``."""

        @self.router.get("/tilejson.json", name="tilejson")
        def tilejson(
            request: Request,
            src: Annotated[LayerSource, Depends(layer_source)],
            style: Annotated[Style, Depends(style_params)],
            tilesize: Annotated[int, Depends(tilesize_param)],
            minzoom: Annotated[Optional[int], Query(ge=0, le=MAX_ZOOM)] = None,
            maxzoom: Annotated[Optional[int], Query(ge=0, le=MAX_ZOOM)] = None,
            format: Annotated[TileFormat, Query(description="The tiles' image format.")] = TileFormat.png,
        ) -> dict[str, Any]:
            keep = {"rescale", "colormap", "min", "opacity", "tilesize"}
            qs = [(k, v) for k, v in request.query_params.multi_items() if k in keep]
            # TiTiler's url_for: the run/acquisition/layer of the prefix come from this request's path
            url = self.url_for(request, "tile", z="{z}", x="{x}", y="{y}", format=format.value) + (
                f"?{urlencode(qs)}" if qs else "")
            with open_layer(src.path, self.tms) as reader:
                w, s, e, n = reader.get_geographic_bounds(self.tms.rasterio_geographic_crs)
                native_min, native_max = reader.minzoom, reader.maxzoom
            lo = native_min if minzoom is None else minzoom
            hi = native_max if maxzoom is None else maxzoom
            return {
                "tilejson": "3.0.0",
                "name": f"{src.acquisition.id} {src.layer.title}",
                "description": src.layer.description,
                "version": "1.0.0",
                "scheme": "xyz",
                "tiles": [url],
                "minzoom": lo,
                "maxzoom": max(lo, hi),
                "bounds": [w, s, e, n],
                "center": [(w + e) / 2, (s + n) / 2, max(lo, min(hi, (lo + hi) // 2 + 1))],
                "attribution": "Contains modified Copernicus Sentinel data",
                "legend": legend(src.layer, colormap=style.colormap, minimum=style.minimum,
                                 rescale=style.rescale),
            }

    def legend(self) -> None:
        """``GET …/legend``."""

        @self.router.get("/legend", name="legend")
        def layer_legend(
            src: Annotated[LayerSource, Depends(layer_source)],
            style: Annotated[Style, Depends(style_params)],
        ) -> dict[str, Any]:
            return legend(src.layer, colormap=style.colormap, minimum=style.minimum, rescale=style.rescale)

    def statistics(self) -> None:
        """``GET …/statistics``."""

        @self.router.get("/statistics", name="statistics")
        def layer_statistics(src: Annotated[LayerSource, Depends(layer_source)]) -> JSONResponse:
            layer = src.layer
            doc: dict[str, Any] = {"layer": layer.name, "acquisition": src.acquisition.id, "kind": layer.kind}
            if src.versus is not None:
                raise NotFound(f"layer {layer.name!r} has no statistics: see …/agreement for the comparison")
            if layer.kind in ("categorical", "continuous"):
                doc.update(_exact_stats(str(src.path), src.path.stat().st_mtime_ns, layer.name), exact=True)
            else:
                doc.update(_sampled_band_stats(src, self.stats_max_size))
            return JSONResponse(doc)
