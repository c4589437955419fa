"""The app: ``streamlit run app.py`` — one server for the pages, the tile server and the browser assets.

Imported as a module (``streamlit run`` finds ``app`` here), this file builds the server: Streamlit's
own routes plus the tile server under ``/tiles`` and Leaflet & co. under ``/assets``
(:mod:`pages.ui.server`). Run as each session's script, it is the navigation: Home, Run, Compare,
Export. UI only: processing lives in ``s2core``.
"""

from __future__ import annotations

import streamlit as st

if __name__ != "__main__":  # imported by `streamlit run app.py`: the server
    from pages.ui.server import navigation_only, routes
    from s2core.settings import get_settings

    navigation_only()
    app = st.App(__file__, routes=routes(get_settings()))
else:  # a session's script run: the pages
    st.navigation([
        st.Page("pages/views/home.py", title="Home", icon="🛰️", default=True),
        st.Page("pages/views/run.py", title="Run", icon="▶️", url_path="Run"),
        st.Page("pages/views/compare.py", title="Compare", icon="🗺️", url_path="Compare"),
        st.Page("pages/views/export.py", title="Export", icon="⬇️", url_path="Export"),
    ]).run()
