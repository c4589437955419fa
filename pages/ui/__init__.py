"""Shared UI pieces of the Streamlit pages (UI only; processing lives in s2core).

Streamlit turns only ``pages/*.py`` into pages; this sub-package is plain imports.
"""
