"""Process-wide resources of the app: settings, the job manager, the tile server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import streamlit as st

from s2core.run.jobs import JobManager
from s2core.errors import InvalidSetting
from s2core.settings import Settings, get_settings
from tiles_server.launcher import TileServerHandle, ensure_server


def settings() -> Settings:
    """The settings (:mod:`s2core.settings`; read from the environment on every rerun: cheap, and tests can
    change them). An unusable value stops the page with the message naming the variable."""
    try:
        return get_settings()
    except InvalidSetting as exc:
        st.error(str(exc))
        st.stop()
        raise  # st.stop() raises; this keeps type checkers informed


@st.cache_resource
def job_manager() -> JobManager:
    """One job manager per app process: jobs survive reruns and page switches."""
    return JobManager()


@st.cache_resource(show_spinner="Starting the tile server…")
def _tile_server(root: str, host: str, port: int, url: Optional[str]) -> TileServerHandle:
    return ensure_server(Path(root), host=host, port=port, url=url)


def tile_server() -> tuple[Optional[TileServerHandle], Optional[str]]:
    """The tile server (started as a subprocess when none answers), or None and why not."""
    s = settings()
    try:
        handle = _tile_server(str(s.runs_dir.resolve()), s.tiles_host, s.tiles_port, s.tiles_url)
    except (RuntimeError, OSError) as exc:
        return None, f"The tile server could not be started: {exc}"
    if not handle.is_up():
        _tile_server.clear()
        return None, "The tile server stopped answering; reload the page to restart it."
    return handle, None
