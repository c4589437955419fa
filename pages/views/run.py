"""Run page: area, dates, catalog and parameters → search → run in the background, with progress."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import streamlit as st
from streamlit_folium import st_folium

from pages.ui.context import asset_prefix, basemap, job_manager, owner_label, settings
from pages.ui.maps import draw_map
from pages.ui.widgets import show_error, status_label
from s2core.model.aoi import AOI, parse_aoi
from s2core.model.bands import L2A_BANDS
from s2core.run.cluster import parse_scheduler
from s2core.errors import InvalidAOI, InvalidParameter, S2CoreError
from s2core.planner import plan
from s2core.masks.registry import registered_cards
from s2core.model.decision import REFERENCE_DECISION
from s2core.model.request import DEFAULT_DILATION_M, MaskOptions, PreprocessRequest, field_choices, field_default
from s2core.run.request import estimate, make_request
from s2core.runfolder.cloud_stats import run_stats
from s2core.runfolder.manifest import load_manifest
from s2core.settings import get_settings

CATALOGS = {"Planetary Computer": "pc", "Earth Search": "earth-search", "STAC API URL": None, "Local catalog": None}
BAND_PRESETS = {"all 12 bands": list(L2A_BANDS), "10 m bands: B02 B03 B04 B08": ["B02", "B03", "B04", "B08"],
                "custom": None}
AOI_SOURCES = ("Draw on the map", "Upload a file", "Paste WKT or GeoJSON")

st.set_page_config(page_title="New run · Sentinel-2", layout="wide")
st.title("New run")
ctx = settings()


# --------------------------------------------------------------------------- 1. AOI
def _aoi_input() -> Optional[Any]:
    """What the user gave as AOI (geometry dict, file path or text), or None."""
    source = st.radio("Area of interest from", AOI_SOURCES, horizontal=True, key="aoi_source")
    if source == AOI_SOURCES[0]:
        drawn = st.session_state.get("aoi_drawn")
        out = st_folium(draw_map(asset_prefix(), basemap(), drawn), height=420, use_container_width=True, key="aoi_map",
                        returned_objects=["last_active_drawing"])
        if out and out.get("last_active_drawing"):
            drawn = out["last_active_drawing"].get("geometry")
            st.session_state["aoi_drawn"] = drawn
        st.caption("Draw a rectangle or polygon with the tools on the left of the map.")
        return drawn
    if source == AOI_SOURCES[1]:
        up = st.file_uploader("GeoJSON, GeoPackage or zipped Shapefile (any CRS)",
                              type=["geojson", "json", "gpkg", "zip"], key="aoi_file")
        if up is None:
            return None
        folder = Path(tempfile.mkdtemp(prefix="aoi-"))
        path = folder / Path(up.name).name
        path.write_bytes(up.getvalue())
        return path
    text = st.text_area("WKT or GeoJSON (lon/lat, EPSG:4326)", key="aoi_text", height=120,
                        placeholder="POLYGON((15.9 45.9, 16.1 45.9, 16.1 46.1, 15.9 46.1, 15.9 45.9))")
    return text if text.strip() else None


st.subheader("1. Area of interest")
aoi_value = _aoi_input()
aoi: Optional[AOI] = None
if aoi_value is not None:
    try:
        aoi = parse_aoi(aoi_value, max_km2=get_settings().max_aoi_km2)
        w, s, e, n = aoi.unwrapped.bounds
        st.success(f"AOI: {aoi.area_km2:,.1f} km² — bounds {w:.4f}, {s:.4f}, {e:.4f}, {n:.4f} "
                   f"— output CRS {aoi.utm_crs.to_string()}")
    except S2CoreError as exc:
        show_error(exc)

# --------------------------------------------------------------------------- 2. dates and catalog
st.subheader("2. Dates and catalog")
c1, c2 = st.columns(2)
today = dt.date.today()
start = c1.date_input("Start date", value=today - dt.timedelta(days=30), key="start")
end = c2.date_input("End date", value=today, key="end")
c1, c2 = st.columns(2)
catalog_kind = c1.selectbox("Catalog", list(CATALOGS), key="catalog_kind")
catalog: str = CATALOGS[catalog_kind] or ""
pc_key: Optional[str] = None
if catalog_kind == "STAC API URL":
    catalog = c2.text_input("STAC API URL", key="catalog_url", placeholder="https://example.com/stac/v1")
elif catalog_kind == "Local catalog":
    catalog = c2.text_input("Catalog path (catalog.json, item collection, item or folder)", key="catalog_path")
elif catalog_kind == "Planetary Computer":
    pc_key = c2.text_input("Planetary Computer key (optional)", type="password", key="pc_key",
                           help="Used only to sign asset URLs; never shown, logged or saved.") or None

# --------------------------------------------------------------------------- 3. parameters
st.subheader("3. Parameters")
cards = registered_cards()
cloud_names = ["auto"] + [n for n, c in cards.items() if "cloud" in c.roles and c.product_level == "L2A"]
shadow_names = ["auto"] + [n for n, c in cards.items() if "shadow" in c.roles and c.product_level == "L2A"]
with st.expander("Bands, grid and selection", expanded=False):
    c1, c2, c3 = st.columns(3)
    preset = c1.selectbox("bands", list(BAND_PRESETS), key="band_preset")
    bands = BAND_PRESETS[preset] or c1.multiselect("custom bands", list(L2A_BANDS), default=list(L2A_BANDS),
                                                   key="bands")
    resolution = c2.number_input("resolution (m)", min_value=1.0, max_value=1000.0, value=field_default("resolution"),
                                 step=10.0, key="resolution")
    dl_timeout = c3.number_input("dl_timeout (s)", min_value=1.0, value=field_default("dl_timeout"), step=10.0,
                                 key="dl_timeout",
                                 help="Upper bound on each band read, retries included.")
    c1, c2 = st.columns(2)
    min_tile_cover = c1.slider("min_tile_cover", 0.05, 1.0, field_default("min_tile_cover"), 0.01, key="min_tile_cover",
                               help="A date is kept only if its tiles cover at least this fraction of the AOI.")
    max_tiles = c2.number_input("max_tiles_per_time (0 = no limit)", min_value=0, value=0, step=1, key="max_tiles")
with st.expander("Resampling, projection and output (the SNAP service's options)", expanded=False):
    c1, c2, c3 = st.columns(3)
    upsampling = c1.selectbox("upsampling", [m for m in field_choices("upsampling") if m != "cubic"], key="upsampling",
                              help="Bands coarser than the output pixels. SCL is always nearest.")
    downsampling = c2.selectbox("downsampling", field_choices("downsampling"), key="downsampling",
                                help="Bands finer than the output pixels (SNAP's methods, nodata skipped).")
    flag_downsampling = c3.selectbox(
        "flag_downsampling", field_choices("flag_downsampling"),
        key="flag_downsampling", help="SCL on a coarser grid.")
    c1, c2 = st.columns(2)
    crs = c1.text_input("output CRS (empty: UTM zone of the AOI)", key="crs", placeholder="EPSG:4326, EPSG:3035, …",
                        help="EPSG code, PROJ string or WKT. On a geographic CRS the resolution in metres becomes "
                             "degrees.").strip()
    output_format = c2.text_input("output format", value=field_default("output_format"), key="output_format",
                                  help="COG, GTiff, or a GDAL driver (ENVI, HFA, netCDF, …): raster.<ext> is "
                                       "added beside the COGs.").strip()
    c1, c2 = st.columns(2)
    land_sea_mask = c1.selectbox("land_sea_mask", field_choices("land_sea_mask"), key="land_sea_mask",
                                 help="land: land pixels to NoData; sea: sea pixels to NoData (1 km global mask, "
                                      "coast refined with SCL water).")
    cloud_nodata = c2.selectbox("cloud_mask (to NoData)", field_choices("cloud_mask"), key="cloud_nodata",
                                help="Set cloudy/shadowed pixels of the raster to NoData by the product mask, the "
                                     "model probabilities or the merged mask (model and merged need model masks).")
with st.expander("Scale out (Dask)", expanded=False):
    scheduler = st.text_input(
        "Dask scheduler (empty: run here)", key="scheduler", placeholder="local, local:4 or tcp://10.0.0.5:8786",
        help="Each acquisition becomes a Dask task: 'local' starts a LocalCluster of worker processes on this "
             "machine; an address uses a running scheduler whose workers see the runs folder.").strip()
    if scheduler:
        try:
            parse_scheduler(scheduler)
        except S2CoreError as exc:
            show_error(exc)
with st.expander("Cloud and shadow masks", expanded=True):
    use_masks = st.checkbox("Compute model masks (cloud and shadow probabilities, merged mask)", value=True,
                            key="use_masks")
    c1, c2 = st.columns(2)
    cloud_model = c1.multiselect("cloud_model (several = ensemble)", cloud_names, default=list(field_default("cloud_model", MaskOptions)),
                                 key="cloud_model", disabled=not use_masks,
                                 help="'auto' picks the U-Net that matches the bands.")
    shadow_model = c2.selectbox("shadow_model", shadow_names, key="shadow_model", disabled=not use_masks)
    c1, c2, c3 = st.columns(3)
    own_decision = c1.radio("decision", ["the model's own", "thresholds"], key="decision", horizontal=True,
                            disabled=not use_masks,
                            help="The model's own: each model card's rule (argmax for the U-Nets, 0.4 for "
                                 "s2cloudless). Thresholds: cloud / shadow where the probability is above them "
                                 "(the reference uses 0.3 / 0.2).") == "the model's own"
    cloud_thr = c2.slider("cloud_thr", 0.0, 1.0, REFERENCE_DECISION.cloud_thr, 0.01, key="cloud_thr",
                          disabled=not use_masks or own_decision)
    shadow_thr = c3.slider("shadow_thr", 0.0, 1.0, REFERENCE_DECISION.shadow_thr, 0.01, key="shadow_thr",
                           disabled=not use_masks or own_decision)
    c1, c2, c3 = st.columns(3)
    dilation_m = c1.number_input("dilation (m)", min_value=0.0, max_value=2000.0, step=10.0,
                                 value=DEFAULT_DILATION_M, key="dilation_m", disabled=not use_masks,
                                 help="Radius of the disk the cloud and shadow masks grow by, in metres (the "
                                      "reference's 5 px at 10 m = 50 m); rounded to whole output pixels.")
    shadow_check = c2.selectbox("shadow_check", field_choices("shadow_check", MaskOptions), key="shadow_check",
                                disabled=not use_masks,
                                help="filter: shadows that no cloud (200 m to 12 km high) can cast under the "
                                     "acquisition's sun become clear. off: the reference's behaviour.")
    in_memory = c3.checkbox("in_memory", value=field_default("in_memory", MaskOptions), key="in_memory", disabled=not use_masks,
                            help="Whole raster in memory for inference: faster, more memory.")


def _request() -> PreprocessRequest:
    """The request from the widgets; raises S2CoreError with what to change."""
    if aoi_value is None:
        raise InvalidAOI("No area of interest yet: draw a rectangle or polygon on the map, upload a file, "
                         "or paste WKT/GeoJSON.")
    if aoi is None:
        raise InvalidAOI("The area of interest is not valid (see the message above): fix it first.")
    if not catalog.strip():
        raise InvalidParameter(f"No catalog given: enter the {catalog_kind} above.")
    masks = None
    if use_masks:
        masks = {"cloud_model": list(cloud_model) or ["auto"], "shadow_model": shadow_model,
                 "cloud_thr": None if own_decision else cloud_thr, "shadow_thr": None if own_decision else shadow_thr,
                 "dilation_m": float(dilation_m), "shadow_check": shadow_check, "in_memory": in_memory}
    return make_request(
        aoi=aoi, start=start, end=end, catalog=catalog.strip(), bands=list(bands) or "", resolution=resolution,
        out_dir=ctx.runs_dir, min_tile_cover=min_tile_cover, max_tiles_per_time=int(max_tiles) or None,
        dl_timeout=dl_timeout, pc_key=pc_key, masks=masks, upsampling=upsampling, downsampling=downsampling,
        flag_downsampling=flag_downsampling, crs=crs or None, output_format=output_format or "COG",
        land_sea_mask=land_sea_mask, cloud_mask=cloud_nodata,
        restricted=True,  # a shared server: catalogs, hosts and paths follow the deployment's policy
        owner=owner_label(),
    )


def _params_key(req: PreprocessRequest) -> str:
    """A fingerprint of the public parameters (the key is never part of it)."""
    return hashlib.sha256(json.dumps(req.public_params(), sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- 4. search
st.subheader("4. Search")
if st.button("Search", key="search", type="secondary"):
    st.session_state.pop("plan", None)
    try:
        req = _request()
        with st.spinner(f"Searching {catalog_kind}…"):
            acquisitions, skipped, n_items = plan(req)
        st.session_state["plan"] = {
            "key": _params_key(req), "n_items": n_items, "ids": [a.id for a in acquisitions],
            "rows": [{"date": str(a.date), "acquisition": a.id, "tiles": " + ".join(a.tiles),
                      "tile cloud % (catalog)": None if a.cloud_cover is None else round(a.cloud_cover, 1),
                      "AOI coverage %": round(100 * a.coverage, 1)} for a in acquisitions],
            "skipped": [{"date": s.date, "acquisition": s.acquisition_id, "why": s.reason} for s in skipped],
        }
    except S2CoreError as exc:
        show_error(exc)
    except Exception as exc:  # noqa: BLE001 - shown as a message, logged with its trace
        show_error(exc)

current_plan = st.session_state.get("plan")
plan_ok = False
if current_plan:
    try:
        plan_ok = current_plan["key"] == _params_key(_request())
    except S2CoreError:
        plan_ok = False
    if not plan_ok:
        st.info("The parameters changed since the last search: search again before running.")
    else:
        n_sel, n_skip = len(current_plan["rows"]), len(current_plan["skipped"])
        st.write(f"{current_plan['n_items']} item(s) found: **{n_sel} acquisition(s) will be processed**, "
                 f"{n_skip} skipped.")
        if current_plan["rows"]:
            st.dataframe(pd.DataFrame(current_plan["rows"]), hide_index=True, width="stretch")
        else:
            st.warning("No acquisition covers the AOI well enough: lower min_tile_cover, raise "
                       "max_tiles_per_time, or widen the dates.")
        if current_plan["skipped"]:
            with st.expander(f"Skipped ({n_skip}) and why"):
                st.dataframe(pd.DataFrame(current_plan["skipped"]), hide_index=True, width="stretch")

# --------------------------------------------------------------------------- 5. run
st.subheader("5. Run")
can_run = bool(plan_ok and current_plan and current_plan["rows"])
size = None
if can_run:
    try:
        size = estimate(_request(), len(current_plan["rows"]))
    except S2CoreError as exc:  # e.g. a grid too large for this server
        show_error(exc)
        can_run = False
if size is not None:
    st.caption(f"Output grid {size.width:,} × {size.height:,} px, {len(current_plan['rows'])} acquisition(s): "
               f"{size.pixels / 1e6:,.1f} Mpx, about {size.output_bytes / 1e9:,.2f} GB of files.")
    for warning in size.warnings:
        st.warning(warning)
    if size.pixels > ctx.confirm_pixels:
        st.warning(f"This run is large ({size.pixels / 1e6:,.0f} Mpx, above this server's "
                   f"{ctx.confirm_pixels / 1e6:,.0f} Mpx): check the AOI and the resolution.")
        can_run = st.checkbox("Yes, run it at this size", key="confirm_size")
if st.button("Run", key="run", type="primary", disabled=not can_run,
             help=None if can_run else "Search first: the run uses the acquisitions the search lists."):
    try:
        if scheduler:
            parse_scheduler(scheduler)
        job = job_manager().start(_request(), planned=tuple(current_plan["ids"]), scheduler=scheduler or None)
        st.session_state["job_token"] = job.token  # this session owns the job (and the URL keeps it on reload)
        st.query_params["job"] = job.token
    except S2CoreError as exc:
        show_error(exc)


@st.fragment(run_every=1.0)
def job_panel(job_id: str) -> None:
    """Progress, per-acquisition status and cancel for one background job (refreshes every second)."""
    job = job_manager().get(job_id)
    if job is None:
        return
    snap = job.snapshot()
    st.markdown(f"**Run {snap.run_id}** — {status_label(snap.status)} — {snap.elapsed:.0f} s")
    st.progress(min(1.0, max(0.0, snap.fraction)), text=f"{snap.stage}: {snap.message}")
    if snap.acquisitions:
        st.dataframe(pd.DataFrame([{"acquisition": k, "status": status_label(v),
                                    "last step": snap.acquisition_messages.get(k, "")}
                                   for k, v in snap.acquisitions.items()]), hide_index=True,
                     width="stretch")
    if not snap.done:
        if st.button("Cancel", key=f"cancel-{job_id}", disabled=snap.cancel_requested):
            job.cancel()
        return
    if snap.status == "completed":
        st.success(f"Done: outputs in run {snap.run_id}. Compare the masks or export the files.")
    elif snap.status == "partial":
        st.warning(snap.error or "Some acquisitions failed.")
    elif snap.status == "cancelled":
        st.warning(snap.error or "Cancelled.")
    else:
        st.error(snap.error or "The run failed.")
    if snap.status in ("completed", "partial"):
        _run_outcome(snap.run_dir)
        c1, c2 = st.columns(2)
        c1.page_link("pages/views/compare.py", label="Compare masks", icon="🗺️")
        c2.page_link("pages/views/export.py", label="Export GeoTIFFs", icon="⬇️")


def _run_outcome(run_dir: Path) -> None:
    """The run's warnings (e.g. a model outside the scale it was trained for) and its dates, clearest first."""
    try:
        manifest = load_manifest(run_dir)
        stats = run_stats(run_dir)
    except (OSError, ValueError):
        return
    for warning in dict.fromkeys(w for a in manifest.acquisitions for w in a.warnings):
        st.warning(warning)
    if stats:
        best = stats[0].clear
        st.dataframe(pd.DataFrame([{
            "date": s.date, "clear % of AOI": round(100 * s.clear, 1), "cloud %": round(100 * s.cloud, 1),
            "shadow %": round(100 * s.shadow, 1), "nodata %": round(100 * s.nodata, 1),
            "clearest": "★" if s.clear >= best - 1e-9 else "", "from": s.source} for s in stats]),
            hide_index=True, width="stretch")


own = job_manager().owned(st.session_state.get("job_token") or st.query_params.get("job"))
if own is not None:
    st.session_state["job_token"] = own.token
    job_panel(own.snapshot().job_id)
else:
    st.caption("No run started in this session yet.")
others = [j for j in job_manager().running() if j is not own]
if others:  # other users' runs: what and how far, read-only (no controls)
    st.caption(f"{len(others)} other run(s) in progress on this server:")
    st.dataframe(pd.DataFrame([{"run": (o := j.snapshot()).run_id, "by": j.request.owner or "?",
                                "stage": o.stage, "done %": round(100 * o.fraction)} for j in others]),
                 hide_index=True, width="stretch")
