"""Home page: what the tool does, the runs on this server, and where the map tiles come from.

UI only: processing lives in ``s2core``; map tiles come from ``tiles_server``, mounted in the app's
own server under ``/tiles`` (or the one at ``S2_TILES_URL``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.ui.context import job_manager, settings, tiles
from pages.ui.widgets import status_label
from s2core.runfolder.listing import list_runs

st.set_page_config(page_title="Sentinel-2 analysis-ready rasters", layout="wide")
st.title("Sentinel-2 analysis-ready rasters and masks")
st.write(
    "Finds the Sentinel-2 L2A scenes covering your area and dates, reads only the pixels it needs, and writes "
    "per date a multi-band Cloud-Optimized GeoTIFF on one grid (10 m by default, or the resolution you choose) "
    "with cloud and shadow masks from ONNX models merged with "
    "the product's SCL mask — to compare on a map and export as GeoTIFFs."
)
ctx = settings()
c1, c2, c3 = st.columns(3)
c1.page_link("pages/views/run.py", label="Start a new run", icon="▶️")
c2.page_link("pages/views/compare.py", label="Compare masks", icon="🗺️")
c3.page_link("pages/views/export.py", label="Export", icon="⬇️")

source, problem = tiles()
if source is None:
    st.warning(problem or "No tile server: maps will be empty.")
elif source.external:
    st.caption(f"Map tiles from the tile server at {source.public}.")

running = job_manager().running()
for job in running:  # read-only: what and how far (a job's controls are its owner's, on the Run page)
    snap = job.snapshot()
    st.progress(min(1.0, max(0.0, snap.fraction)), text=f"Running {snap.run_id}: {snap.stage} {snap.fraction:.0%}")

runs = list_runs(ctx.runs_dir)
st.subheader(f"Runs in {ctx.runs_dir}")
if not runs:
    st.info("No run yet. Start one on the Run page, or from the command line: `python -m s2core run --help`.")
else:
    st.dataframe(pd.DataFrame([{"run": r.run_id, "status": status_label(r.status), "created": r.created,
                                "acquisitions": r.completed, "failed": r.failed} for r in runs]),
                 hide_index=True, width="stretch")
