"""Streamlit home page: what the tool does and the runs found under the output root.

UI only: every piece of processing lives in ``s2core``. The run/compare/export pages
arrive in ``pages/`` with the app issue; until then use the CLI (see README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from s2core.runs import list_runs

RUNS_ROOT = Path(os.environ.get("S2_RUNS_DIR", "runs"))

st.set_page_config(page_title="Sentinel-2 analysis-ready rasters", layout="wide")
st.title("Sentinel-2 analysis-ready rasters and masks")
st.write(
    "Finds the Sentinel-2 L2A scenes covering your area and dates, reads only the pixels it needs, "
    "and writes one 10 m multi-band Cloud-Optimized GeoTIFF plus the product (SCL) mask per date."
)
runs = list_runs(RUNS_ROOT)
st.subheader(f"Runs in {RUNS_ROOT}")
if not runs:
    st.info("No run yet. Start one from the command line: `python -m s2core preprocess --help`.")
for run in runs:
    st.write(f"**{run.run_id}** — {run.status} — {run.completed} acquisition(s), created {run.created}")
