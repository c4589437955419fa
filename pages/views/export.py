"""Export page: download the GeoTIFFs, STAC items and manifest of a run, or the whole run as a zip."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pages.ui.context import settings
from pages.ui.widgets import show_error, status_label
from s2core.runfolder.export import human_size, run_files, zip_run
from s2core.runfolder.listing import list_runs

MIME = {"geotiff": "image/tiff", "stac": "application/geo+json", "manifest": "application/json"}
#: Streamlit holds a download in memory: bigger files are pointed to on disk instead.
MAX_DOWNLOAD_BYTES = 2_000_000_000

st.set_page_config(page_title="Export · Sentinel-2", layout="wide")
st.title("Export")
ctx = settings()
runs = list_runs(ctx.runs_dir)
if not runs:
    st.info("No run yet: start one on the Run page.")
    st.page_link("pages/views/run.py", label="New run", icon="▶️")
    st.stop()

run = st.selectbox("Run", runs, format_func=lambda r: f"{r.run_id} — {status_label(r.status)}", key="exp_run")
try:
    files = run_files(run.path)
except (OSError, ValueError) as exc:
    show_error(exc)
    st.stop()

total = sum(f.size for f in files)
st.write(f"{len(files)} file(s), {human_size(total)} in run `{run.run_id}`")
st.dataframe(pd.DataFrame([{"file": f.name, "kind": f.kind, "size": human_size(f.size)} for f in files]),
             hide_index=True, width="stretch")


def download(f, key: str) -> None:  # noqa: ANN001 - a RunFile
    """A download button for one file (or its path when it is too big to hold in memory)."""
    label = f"{f.name.rsplit('/', 1)[-1]} ({human_size(f.size)})"
    if f.size > MAX_DOWNLOAD_BYTES:
        st.caption(f"{label}: too large for a browser download here; ask for `{run.run_id}/{f.name}` in the "
                   "server's runs folder")
        return
    st.download_button(label, data=f.path.read_bytes, file_name=f.name.replace("/", "_"),  # read on click
                       mime=MIME[f.kind], key=key)


st.subheader("Files")
manifest_file = next(f for f in files if f.kind == "manifest")
download(manifest_file, "dl-manifest")
by_acq: dict[str, list] = {}
for f in files:
    if f.acquisition:
        by_acq.setdefault(f.acquisition, []).append(f)
for acq_id, acq_files in by_acq.items():
    with st.expander(f"{acq_id} — {len(acq_files)} file(s), {human_size(sum(f.size for f in acq_files))}"):
        cols = st.columns(3)
        for i, f in enumerate(acq_files):
            with cols[i % 3]:
                download(f, f"dl-{f.name}")

st.subheader("Whole run")
if st.button("Prepare a zip of the run", key="zip"):
    try:
        with st.spinner("Zipping…"):
            st.session_state["zip_path"] = str(zip_run(run.path))
    except OSError as exc:
        show_error(exc)
zip_path = st.session_state.get("zip_path")
if zip_path and zip_path.endswith(f"{run.run_id}.zip"):
    z = Path(zip_path)
    if z.stat().st_size <= MAX_DOWNLOAD_BYTES:
        st.download_button(f"Download {z.name} ({human_size(z.stat().st_size)})", data=z.read_bytes,
                           file_name=z.name, mime="application/zip", key="dl-zip")
    else:
        st.caption(f"{z.name} is {human_size(z.stat().st_size)}: copy it from `{z}`")
