"""Compare page: model mask vs product (SCL) mask side by side over the image, with agreement figures."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd
import requests
import streamlit as st
from streamlit_folium import st_folium

from pages.ui.context import settings, tile_server
from pages.ui.maps import split_map
from pages.ui.widgets import legend_html, show_error, status_label
from s2core.runfolder.manifest import Manifest
from s2core.runfolder.manifest import load_manifest
from s2core.runfolder.stats import mask_agreement
from s2core.runfolder.listing import list_runs
from tiles_server.layers import LAYERS

LEFT_LAYERS = {"Model mask": "mask", "Cloud probability": "cloud_prob", "Shadow probability": "shadow_prob"}
RIGHT_LAYERS = {"Product mask (SCL classes merged)": "product_mask", "SCL (all classes)": "scl"}
BASES = {"True colour": "rgb", "False colour": "falsecolor", "NDVI": "ndvi", "None": None}

st.set_page_config(page_title="Compare masks · Sentinel-2", layout="wide")
st.title("Compare model and product masks")
ctx = settings()
server, problem = tile_server()
if problem:
    st.error(problem)

runs = [r for r in list_runs(ctx.runs_dir) if r.completed]
if not runs:
    st.info("No completed run yet: start one on the Run page.")
    st.page_link("pages/1_Run.py", label="New run", icon="▶️")
    st.stop()

c1, c2 = st.columns(2)
run = c1.selectbox("Run", runs, format_func=lambda r: f"{r.run_id} — {status_label(r.status)}", key="cmp_run")
manifest: Manifest = load_manifest(run.path)
acqs = [a for a in manifest.acquisitions if a.status == "completed"]
with_masks = [a for a in acqs if "mask" in a.outputs]
if not with_masks:
    st.warning("This run has no model masks (it was run without them): start a run with masks to compare.")
    st.stop()
acq = c2.selectbox("Acquisition", with_masks, format_func=lambda a: f"{a.datetime[:10]} — {a.id}", key="cmp_acq")

c1, c2, c3, c4, c5 = st.columns(5)
left_name = c1.selectbox("Left", list(LEFT_LAYERS), key="cmp_left")
right_name = c2.selectbox("Right", list(RIGHT_LAYERS), key="cmp_right")
base_name = c3.selectbox("Under both", list(BASES), key="cmp_base")
opacity = c4.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="cmp_opacity")
minimum = c5.slider("Probability min", 0.0, 1.0, 0.05, 0.01, key="cmp_min",
                    help="Probabilities below this are transparent.")


@st.cache_data(ttl=60, show_spinner=False)
def _tilejson(base_url: str, run_id: str, acq_id: str, layer: str, query: tuple[tuple[str, Any], ...]) -> dict:
    resp = requests.get(f"{base_url}/runs/{run_id}/{acq_id}/{layer}/tilejson.json", params=dict(query), timeout=30)
    resp.raise_for_status()
    return resp.json()


def tilejson(layer: str, **query: Any) -> Optional[dict]:
    """The layer's TileJSON from the tile server (None, with a message, when it fails)."""
    if server is None:
        return None
    try:
        return _tilejson(server.url, run.run_id, acq.id, layer, tuple(sorted(query.items())))
    except requests.RequestException as exc:
        st.error(f"The tile server did not give the {layer} layer ({exc}); is the run folder still there?")
        return None


map_col, stats_col = st.columns([3, 2])
with map_col:
    left_layer, right_layer, base_layer = LEFT_LAYERS[left_name], RIGHT_LAYERS[right_name], BASES[base_name]
    q_left = {"opacity": opacity, **({"min": minimum} if left_layer.endswith("_prob") else {})}
    left_tj, right_tj = tilejson(left_layer, **q_left), tilejson(right_layer, opacity=opacity)
    bands = list(manifest.parameters.get("bands") or [])
    base_ok = base_layer is not None and LAYERS[base_layer].available(acq.outputs, bands)
    if base_layer and not base_ok:
        st.caption(f"{base_name} needs bands {', '.join(LAYERS[base_layer].bands)}, which this run lacks.")
    base_tj = tilejson(base_layer) if base_ok else None
    if left_tj and right_tj:
        st_folium(split_map(base_tj, (left_name, left_tj, opacity), (right_name, right_tj, opacity)),
                  height=560, use_container_width=True, returned_objects=[], key="cmp_map")
        st.caption(f"Drag the slider: left **{left_name}**, right **{right_name}**.")
        st.markdown(legend_html(left_tj["legend"]), unsafe_allow_html=True)
        st.markdown(legend_html(right_tj["legend"]), unsafe_allow_html=True)

with stats_col:
    st.subheader("Agreement")
    try:
        result = mask_agreement(run.path / acq.outputs["mask"], run.path / acq.outputs["product_mask"])
        m1, m2, m3 = st.columns(3)
        m1.metric("Overall agreement", f"{100 * result.overall:.1f} %")
        iou_cloud, iou_shadow = result.iou.get("cloud"), result.iou.get("shadow")
        m2.metric("Cloud IoU", "—" if iou_cloud is None else f"{iou_cloud:.2f}")
        m3.metric("Shadow IoU", "—" if iou_shadow is None else f"{iou_shadow:.2f}")
        pct = pd.DataFrame({"model %": result.model_percent, "product %": result.product_percent}).round(2)
        st.dataframe(pct, width="stretch")
        cm = pd.DataFrame(result.matrix, index=[f"model {x}" for x in result.labels],
                          columns=[f"product {x}" for x in result.labels])
        st.caption(f"Confusion matrix (pixels valid in both: {result.pixels:,})")
        st.dataframe(cm, width="stretch")
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
