"""Compare page: model mask vs product (SCL) mask side by side over the image, with agreement figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import streamlit as st
from streamlit_folium import st_folium

from pages.ui.context import LayerUnavailable, TileSource, asset_prefix, basemap, settings, tiles
from pages.ui.maps import split_map
from pages.ui.widgets import legend_html, show_error, status_label
from s2core.errors import S2CoreError
from s2core.model.aoi import parse_aoi
from s2core.runfolder.manifest import Manifest, load_manifest
from s2core.runfolder.probe import values_at
from s2core.runfolder.stats import mask_agreement
from s2core.runfolder.listing import list_runs
from tiles_server.layers import LAYERS

LEFT_LAYERS = {"Model mask": "mask", "Disagreement (model vs product)": "disagreement",
               "Cloud probability": "cloud_prob", "Shadow probability": "shadow_prob"}
RIGHT_LAYERS = {"Product mask (SCL classes merged)": "product_mask", "SCL (all classes)": "scl",
                "Disagreement (model vs product)": "disagreement"}
BASES = {"True colour": "rgb", "False colour": "falsecolor", "NDVI": "ndvi", "None": None}

st.set_page_config(page_title="Compare masks · Sentinel-2", layout="wide")
st.title("Compare model and product masks")
ctx = settings()
source, problem = tiles()
if problem:
    st.error(problem)

runs = [r for r in list_runs(ctx.runs_dir) if r.completed]
if not runs:
    st.info("No completed run yet: start one on the Run page.")
    st.page_link("pages/views/run.py", label="New run", icon="▶️")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=256)
def _run_label(path: str, mtime_ns: int) -> str:
    """What a run is, in one line: status, dates, bands, models, AOI size."""
    m = load_manifest(Path(path))
    done = sorted(a.datetime[:10] for a in m.acquisitions if a.status == "completed")
    dates = f"{len(done)} date(s) {done[0]}…{done[-1][5:]}" if len(done) > 1 else (done[0] if done else "no date")
    masks = m.parameters.get("masks") or {}
    names = [*(masks.get("cloud_model") or []), masks.get("shadow_model") or ""] if masks else []
    models = ",".join(n for n in dict.fromkeys(names) if n) or "no models"
    try:
        area = f"{parse_aoi(m.parameters['aoi']).area_km2:,.0f} km²"
    except (S2CoreError, KeyError):
        area = "AOI ?"
    return (f"{m.run_id} — {status_label(m.status)} — {dates} — {','.join(m.parameters.get('bands') or [])} — "
            f"{m.parameters.get('resolution', '?')} m — {models} — {area}")


# the latest completed run first (runs are listed newest first)
runs.sort(key=lambda r: r.status != "completed")
c1, c2 = st.columns([3, 2])
run = c1.selectbox("Run", runs, key="cmp_run", format_func=lambda r: _run_label(
    str(r.path), (r.path / "manifest.json").stat().st_mtime_ns))
manifest: Manifest = load_manifest(run.path)
acqs = [a for a in manifest.acquisitions if a.status == "completed"]
with_masks = [a for a in acqs if "mask" in a.outputs]
if not with_masks:
    st.warning("This run has no model masks (it was run without them): start a run with masks to compare.")
    st.stop()
clearest = max(with_masks, key=lambda a: a.mask_fractions.get("clear", 0.0) * (1 - a.mask_fractions.get("nodata", 0)))
acq = c2.selectbox("Acquisition", with_masks, key="cmp_acq", format_func=lambda a: (
    f"{a.datetime[:10]} — clear {100 * a.mask_fractions.get('clear', 0.0):.0f} % of the AOI"
    f"{' ★ clearest' if a is clearest else ''} — {a.id}"))
for warning in dict.fromkeys(acq.warnings):
    st.warning(warning)

c1, c2, c3, c4, c5 = st.columns([3, 3, 2.5, 2, 2])  # the layer names need the room
left_name = c1.selectbox("Left", list(LEFT_LAYERS), key="cmp_left")
right_name = c2.selectbox("Right", list(RIGHT_LAYERS), key="cmp_right")
base_name = c3.selectbox("Under both", list(BASES), key="cmp_base")
opacity = c4.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="cmp_opacity", help="Opacity of the mask overlays.")
minimum = c5.slider("Min. prob.", 0.0, 1.0, 0.05, 0.01, key="cmp_min",
                    help="Probabilities below this are transparent.")


def tilejson(layer: str, **query: Any) -> Optional[dict]:
    """The layer's TileJSON (None, with a message, when it fails)."""
    if source is None:
        return None
    try:
        return _tilejson(source, run.run_id, acq.id, layer, tuple(sorted(query.items())))
    except LayerUnavailable as exc:
        st.error(f"The {layer} layer is not available ({exc}); is the run folder still there?")
        return None


@st.cache_data(ttl=60, show_spinner=False)
def _tilejson(src: TileSource, run_id: str, acq_id: str, layer: str, query: tuple[tuple[str, Any], ...]) -> dict:
    return src.tilejson(run_id, acq_id, layer, dict(query))


left_layer, right_layer, base_layer = LEFT_LAYERS[left_name], RIGHT_LAYERS[right_name], BASES[base_name]
q_left = {"opacity": opacity, **({"min": minimum} if left_layer.endswith("_prob") else {})}
left_tj = tilejson(left_layer, **q_left)
right_tj = tilejson(right_layer, opacity=opacity)
bands = list(manifest.parameters.get("bands") or [])
base_ok = base_layer is not None and LAYERS[base_layer].available(acq.outputs, bands)
if base_layer and not base_ok:
    st.caption(f"{base_name} needs bands {', '.join(LAYERS[base_layer].bands)}, which this run lacks.")
base_tj = tilejson(base_layer) if base_ok else None
if left_tj and right_tj:
    # the view (centre, zoom) survives changes of date, layer and opacity; a new run starts from its bounds.
    # A new map (a change of what it shows) starts at the last view; while it shows the same, its script
    # stays the same, so that the browser keeps the map and the view the user is moving
    signature = (run.run_id, acq.id, left_layer, right_layer, base_layer, opacity, minimum)
    start = st.session_state.get("cmp_start")
    if not start or start[0] != signature:
        view = st.session_state.get("cmp_view")
        view = view if view and view.get("run") == run.run_id else None
        start = (signature, (view["center"]["lat"], view["center"]["lng"], view["zoom"]) if view else None)
        st.session_state["cmp_start"] = start
    initial = start[1]
    out = st_folium(split_map(asset_prefix(), basemap(), base_tj, (left_name, left_tj, opacity),
                              (right_name, right_tj, opacity),
                              view=((initial[0], initial[1]), int(initial[2])) if initial else None),
                    height=620, use_container_width=True, key="cmp_map",
                    returned_objects=["center", "zoom", "last_clicked"])
    if out and out.get("center") and out.get("zoom"):
        st.session_state["cmp_view"] = {"run": run.run_id, "center": out["center"], "zoom": out["zoom"]}
    c1, c2 = st.columns(2)
    c1.markdown(legend_html(left_tj["legend"]), unsafe_allow_html=True)
    c2.markdown(legend_html(right_tj["legend"]), unsafe_allow_html=True)
    st.caption(f"Drag the divider: left **{left_name}**, right **{right_name}**. Click a pixel for its values.")
    clicked = (out or {}).get("last_clicked")
    if clicked:
        probe = values_at(run.path, acq, float(clicked["lng"]), float(clicked["lat"]))
        if probe.inside:
            st.dataframe(pd.DataFrame([{"at": f"{clicked['lat']:.5f}, {clicked['lng']:.5f}", **probe.values}]),
                         hide_index=True, width="stretch")

st.subheader("Agreement")
try:
    result = mask_agreement(run.path / acq.outputs["mask"], run.path / acq.outputs["product_mask"])
    m1, m2, m3 = st.columns(3)
    m1.metric("Overall agreement", f"{100 * result.overall:.1f} %")
    iou_cloud, iou_shadow = result.iou.get("cloud"), result.iou.get("shadow")
    m2.metric("Cloud IoU", "—" if iou_cloud is None else f"{iou_cloud:.2f}")
    m3.metric("Shadow IoU", "—" if iou_shadow is None else f"{iou_shadow:.2f}")
    c1, c2 = st.columns([1, 2])
    pct = pd.DataFrame({"model %": result.model_percent, "product %": result.product_percent}).round(2)
    c1.dataframe(pct, width="stretch")
    cm = pd.DataFrame(result.matrix, index=[f"model {x}" for x in result.labels],
                      columns=[f"product {x}" for x in result.labels])
    c2.caption(f"Confusion matrix (pixels valid in both: {result.pixels:,})")
    c2.dataframe(cm, width="stretch")
except (OSError, ValueError, KeyError) as exc:
    show_error(exc)

st.subheader("Cloud cover of the AOI per date")
st.caption("Shares of the AOI's valid pixels (not the tile's catalog figure); ★ marks the clearest date(s).")
series = pd.DataFrame(
    [{"date": a.datetime[:10], "model cloud %": 100 * a.mask_fractions.get("cloud", 0.0),
      "product cloud %": 100 * a.product_mask_fractions.get("cloud", 0.0),
      "model shadow %": 100 * a.mask_fractions.get("shadow", 0.0),
      "product shadow %": 100 * a.product_mask_fractions.get("shadow", 0.0),
      "model clear %": 100 * a.mask_fractions.get("clear", 0.0)} for a in with_masks]
).groupby("date").mean()
series["clearest"] = np.where(series["model clear %"] >= series["model clear %"].max() - 1e-9, "★", "")
st.line_chart(series, y=["model cloud %", "product cloud %"], width="stretch")
with st.expander("Figures per date"):
    st.dataframe(series.round(2), width="stretch")
