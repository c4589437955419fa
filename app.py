"""Streamlit home page: what the tool does, past runs, and whether the tile server is up.

UI only: processing lives in ``s2core``, map tiles come from ``tiles_server`` (started here
as a subprocess when none answers).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.ui.context import job_manager, settings, tile_server
from pages.ui.widgets import status_label
from s2core.runfolder.listing import list_runs

st.set_page_config(page_title="Sentinel-2 analysis-ready rasters", layout="wide")
st.title("Sentinel-2 analysis-ready rasters and masks")
st.write(
    "Finds the Sentinel-2 L2A scenes covering your area and dates, reads only the pixels it needs, and writes "
    "per date a 10 m multi-band Cloud-Optimized GeoTIFF with cloud and shadow masks from ONNX models merged with "
    "the product's SCL mask — to compare on a map and export as GeoTIFFs."
)
ctx = settings()
c1, c2, c3 = st.columns(3)
c1.page_link("pages/1_Run.py", label="Start a new run", icon="▶️")
c2.page_link("pages/2_Compare.py", label="Compare masks", icon="🗺️")
c3.page_link("pages/3_Export.py", label="Export", icon="⬇️")

server, problem = tile_server()
if server is not None:
    st.caption(f"Tile server up at {server.url}" + (" (started by this app)" if server.started_here else ""))
else:
    st.warning(problem or "The tile server is not running; maps will be empty.")

running = job_manager().running()
for job in running:
    snap = job.snapshot()
    st.progress(snap.fraction, text=f"Running {snap.run_id}: {snap.message}")

runs = list_runs(ctx.runs_dir)
st.subheader(f"Runs in {ctx.runs_dir}")
if not runs:
    st.info("No run yet. Start one on the Run page, or from the command line: `python -m s2core run --help`.")
else:
    st.dataframe(pd.DataFrame([{"run": r.run_id, "status": status_label(r.status), "created": r.created,
                                "acquisitions": r.completed, "failed": r.failed} for r in runs]),
                 hide_index=True, width="stretch")
