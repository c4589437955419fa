"""Process-wide resources of the app: settings, the job manager, the tile server."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import streamlit as st

from s2core.jobs import JobManager
from tiles_server.launcher import TileServerHandle, ensure_server


@dataclass(frozen=True)
class AppSettings:
    """Where runs go and where the tile server listens (environment variables, with defaults)."""

    runs_root: Path
    tiles_host: str
    tiles_port: int
    tiles_url: Optional[str]

    @classmethod
    def from_env(cls) -> "AppSettings":
        """``S2_RUNS_DIR`` (runs), ``S2_TILES_HOST`` (127.0.0.1), ``S2_TILES_PORT`` (8001), ``S2_TILES_URL``."""
        return cls(
            runs_root=Path(os.environ.get("S2_RUNS_DIR", "runs")),
            tiles_host=os.environ.get("S2_TILES_HOST", "127.0.0.1"),
            tiles_port=int(os.environ.get("S2_TILES_PORT", "8001")),
            tiles_url=os.environ.get("S2_TILES_URL") or None,
        )


def settings() -> AppSettings:
    """The app's settings (read from the environment on every rerun: cheap, and tests can change them)."""
    return AppSettings.from_env()


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
        handle = _tile_server(str(s.runs_root.resolve()), s.tiles_host, s.tiles_port, s.tiles_url)
    except (RuntimeError, OSError) as exc:
        return None, f"The tile server could not be started: {exc}"
    if not handle.is_up():
        _tile_server.clear()
        return None, "The tile server stopped answering; reload the page to restart it."
    return handle, None
