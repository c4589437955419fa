"""Folium maps of the pages: AOI drawing, and overlays from the tile server (split view)."""

from __future__ import annotations

from typing import Any, Optional

import folium
from folium.plugins import Draw, SideBySideLayers

DEFAULT_CENTER = (46.0, 16.0)


def draw_map(aoi_geojson: Optional[dict[str, Any]] = None, center: tuple[float, float] = DEFAULT_CENTER,
             zoom: int = 9) -> folium.Map:
    """A map with rectangle/polygon drawing tools; the current AOI (if any) drawn in blue."""
    m = folium.Map(location=center, zoom_start=zoom, control_scale=True)
    Draw(
        export=False, position="topleft",
        draw_options={"polyline": False, "circle": False, "circlemarker": False, "marker": False,
                      "polygon": {"allowIntersection": False, "showArea": True}, "rectangle": {"showArea": True}},
        edit_options={"edit": False},
    ).add_to(m)
    if aoi_geojson:
        layer = folium.GeoJson(aoi_geojson, name="AOI", style_function=lambda _: {"color": "#1f6feb", "weight": 2,
                                                                                   "fillOpacity": 0.05})
        layer.add_to(m)
        m.fit_bounds(layer.get_bounds())
    return m


def tile_layer(tilejson: dict[str, Any], name: str, opacity: float = 1.0, overlay: bool = True) -> folium.TileLayer:
    """A Leaflet tile layer from a TileJSON of the tile server (over-zoom beyond the native zoom)."""
    w, s, e, n = tilejson["bounds"]
    return folium.TileLayer(
        tiles=tilejson["tiles"][0], attr=tilejson.get("attribution", ""), name=name, overlay=overlay,
        control=True, opacity=opacity, max_native_zoom=tilejson["maxzoom"], max_zoom=19,
        min_zoom=0, bounds=[[s, w], [n, e]],
    )


def fit(m: folium.Map, tilejson: dict[str, Any]) -> None:
    """Zoom the map to a layer's bounds."""
    w, s, e, n = tilejson["bounds"]
    m.fit_bounds([[s, w], [n, e]])


def overlay_map(base: dict[str, Any], overlays: list[tuple[str, dict[str, Any], float]]) -> folium.Map:
    """A map with ``base`` (e.g. RGB) and toggleable overlays ``(name, tilejson, opacity)``."""
    m = folium.Map(location=DEFAULT_CENTER, zoom_start=10, control_scale=True)
    tile_layer(base, "Image", 1.0).add_to(m)
    for name, tj, opacity in overlays:
        tile_layer(tj, name, opacity).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    fit(m, base)
    return m


def split_map(base: Optional[dict[str, Any]], left: tuple[str, dict[str, Any], float],
              right: tuple[str, dict[str, Any], float]) -> folium.Map:
    """A side-by-side map: ``left`` and ``right`` overlays over the ``base`` image, with a slider."""
    m = folium.Map(location=DEFAULT_CENTER, zoom_start=10, control_scale=True)
    if base is not None:
        tile_layer(base, "Image", 1.0).add_to(m)
    lname, ltj, lop = left
    rname, rtj, rop = right
    layer_l = tile_layer(ltj, lname, lop)
    layer_r = tile_layer(rtj, rname, rop)
    layer_l.add_to(m)
    layer_r.add_to(m)
    SideBySideLayers(layer_left=layer_l, layer_right=layer_r).add_to(m)
    fit(m, base or ltj)
    return m
