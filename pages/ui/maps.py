"""Folium maps of the pages: AOI drawing, and overlays from the tile server (split view).

Every script and stylesheet the maps need is served by the app itself (``pages/ui/static``, under
``/assets``): no page asks a CDN for anything, so the maps work without internet. The basemap is a
setting (``S2_BASEMAP_URL``: an XYZ template, or ``none``); when it cannot load, the map says so and
the run's imagery still shows. The split view keeps the divider where the user left it (browser
storage) and the pages keep centre and zoom across reruns.
"""

from __future__ import annotations

from typing import Any, Optional

import folium
from branca.element import Element, MacroElement
from folium.plugins import Draw, SideBySideLayers
from jinja2 import Template

DEFAULT_CENTER = (46.0, 16.0)

#: The browser assets, relative to the app's ``/assets`` (see pages/ui/static/README.md).
ASSETS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "map": {"js": [("leaflet", "leaflet-1.9.3/leaflet.js")],
            "css": [("leaflet_css", "leaflet-1.9.3/leaflet.css")]},
    "draw": {"js": [("leaflet_draw_js", "leaflet-draw-1.0.4/leaflet.draw.js")],
             "css": [("leaflet_draw_css", "leaflet-draw-1.0.4/leaflet.draw.css")]},
    "side_by_side": {"js": [("leaflet.sidebyside", "leaflet-side-by-side-2.0.0/leaflet-side-by-side.js")],
                     "css": [("sidebyside_layout", "leaflet-side-by-side-2.0.0/layout.css"),
                             ("sidebyside_range", "leaflet-side-by-side-2.0.0/range.css")]},
}

#: The attribution stays inside the map (long attributions used to overflow it).
_STYLE = ("<style>.leaflet-control-attribution{max-width:70%;white-space:nowrap;overflow:hidden;"
          "text-overflow:ellipsis}.s2-basemap-note{background:rgba(255,255,255,.9);padding:2px 6px;"
          "font:12px sans-serif;border-radius:3px}</style>")


def _local(element: Any, kind: str, prefix: str) -> Any:
    """Point an element's scripts and stylesheets at the app's own copies."""
    element.default_js = [(name, f"{prefix}/{path}") for name, path in ASSETS[kind]["js"]]
    element.default_css = [(name, f"{prefix}/{path}") for name, path in ASSETS[kind]["css"]]
    return element


class BasemapWatch(MacroElement):
    """Says on the map when the basemap's tiles fail to load (offline, blocked): the overlays still show."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, failed = 0, shown = false;
            {{ this.layer.get_name() }}.on('tileerror', function () {
                failed += 1;
                if (shown || failed < 2) { return; }
                shown = true;
                var note = L.control({position: 'bottomleft'});
                note.onAdd = function () {
                    var div = L.DomUtil.create('div', 's2-basemap-note');
                    div.setAttribute('data-testid', 'basemap-unreachable');
                    div.textContent = 'Basemap unreachable (no internet?): the run\\u2019s layers still show.';
                    return div;
                };
                note.addTo(map);
            });
        })();
        {% endmacro %}
    """)

    def __init__(self, layer: folium.TileLayer) -> None:
        super().__init__()
        self._name = "BasemapWatch"
        self.layer = layer


class KeepDivider(MacroElement):
    """Keeps the side-by-side divider where the user left it, across reruns (the browser's storage)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var control = {{ this.control.get_name() }}, key = 's2core-divider';
            var range = control._range;
            if (!range) { return; }
            var saved = window.localStorage && localStorage.getItem(key);
            if (saved !== null && saved !== undefined) { range.value = saved; control._updateClip(); }
            range.addEventListener('input', function () {
                try { localStorage.setItem(key, range.value); } catch (e) {}
            });
        })();
        {% endmacro %}
    """)

    def __init__(self, control: SideBySideLayers) -> None:
        super().__init__()
        self._name = "KeepDivider"
        self.control = control


def new_map(assets: str, basemap: Optional[tuple[str, str]], center: tuple[float, float] = DEFAULT_CENTER,
            zoom: int = 9) -> folium.Map:
    """A map whose scripts come from ``assets`` (the app's ``/assets`` URL), with ``basemap`` =
    (XYZ template, attribution) under everything, or none."""
    m = _local(folium.Map(location=center, zoom_start=zoom, control_scale=True, tiles=None), "map", assets)
    m.get_root().header.add_child(Element(_STYLE))
    if basemap is not None:
        url, attribution = basemap
        layer = folium.TileLayer(tiles=url, attr=attribution, name="Basemap", overlay=False, control=False,
                                 max_zoom=19)
        layer.add_to(m)
        BasemapWatch(layer).add_to(m)
    return m


def draw_map(assets: str, basemap: Optional[tuple[str, str]], aoi_geojson: Optional[dict[str, Any]] = None,
             center: tuple[float, float] = DEFAULT_CENTER, zoom: int = 9) -> folium.Map:
    """A map with rectangle/polygon drawing tools; the current AOI (if any) drawn in blue."""
    m = new_map(assets, basemap, center, zoom)
    _local(Draw(
        export=False, position="topleft",
        draw_options={"polyline": False, "circle": False, "circlemarker": False, "marker": False,
                      "polygon": {"allowIntersection": False, "showArea": True}, "rectangle": {"showArea": True}},
        edit_options={"edit": False},
    ), "draw", assets).add_to(m)
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


def split_map(assets: str, basemap: Optional[tuple[str, str]], base: Optional[dict[str, Any]],
              left: tuple[str, dict[str, Any], float], right: tuple[str, dict[str, Any], float],
              view: Optional[tuple[tuple[float, float], int]] = None) -> folium.Map:
    """A side-by-side map: ``left`` and ``right`` overlays over the ``base`` image, with a divider.

    ``view`` = (centre, zoom) keeps the user's view; without it the map fits the layers.
    """
    m = new_map(assets, basemap, *(view or (DEFAULT_CENTER, 10)))
    if base is not None:
        tile_layer(base, "Image", 1.0).add_to(m)
    lname, ltj, lop = left
    rname, rtj, rop = right
    layer_l = tile_layer(ltj, lname, lop)
    layer_r = tile_layer(rtj, rname, rop)
    layer_l.add_to(m)
    layer_r.add_to(m)
    control = _local(SideBySideLayers(layer_left=layer_l, layer_right=layer_r), "side_by_side", assets)
    control.add_to(m)
    KeepDivider(control).add_to(m)
    if view is None:
        fit(m, base or ltj)
    return m
