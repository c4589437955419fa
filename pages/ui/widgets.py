"""Small display helpers shared by the pages."""

from __future__ import annotations

import html
import logging
from typing import Any

import streamlit as st

from s2core.errors import S2CoreError

log = logging.getLogger(__name__)

STATUS_ICONS = {"completed": "✅", "partial": "⚠️", "failed": "❌", "cancelled": "⏹️", "running": "⏳", "interrupted": "⏸️",
                "pending": "•", "skipped": "↷"}


def show_error(exc: BaseException) -> None:
    """A readable message, never a traceback: s2core's messages already say what to change."""
    if isinstance(exc, S2CoreError):
        st.error(str(exc))
    else:
        log.exception("unexpected error in the app")
        st.error(f"Unexpected {type(exc).__name__}: {exc}. The app's log has the details.")


def status_label(status: str) -> str:
    """``✅ completed`` style label."""
    return f"{STATUS_ICONS.get(status, '')} {status}".strip()


def legend_html(doc: dict[str, Any]) -> str:
    """A compact HTML legend from the tile server's legend document."""
    title = html.escape(str(doc.get("title", "")))
    if doc.get("kind") == "categorical":
        items = "".join(
            f'<span style="display:inline-block;margin-right:10px;white-space:nowrap">'
            f'<span style="display:inline-block;width:12px;height:12px;border:1px solid #888;'
            f'background:{c["color"]};opacity:{max(c["opacity"], 0.0)};vertical-align:middle"></span> '
            f'{html.escape(c["label"])}{" (transparent)" if c["opacity"] == 0 else ""}</span>'
            for c in doc.get("classes", []))
        return f'<div class="legend"><b>{title}</b><br>{items}</div>'
    if "stops" in doc:
        stops = ", ".join(f"{c} {float(v) * 100:.0f}%" for v, c in doc["stops"])
        lo, hi = doc.get("min", 0), doc.get("max", 1)
        return (f'<div class="legend"><b>{title}</b><br><span style="display:inline-block;width:180px;height:10px;'
                f'background:linear-gradient(to right, {stops})"></span> {lo} – {hi} {html.escape(doc.get("unit", ""))}'
                f'{" (below min transparent)" if doc.get("below_min") else ""}</div>')
    bands = "/".join(doc.get("bands", []))
    lo, hi = doc.get("rescale", ["", ""])
    return f'<div class="legend"><b>{title}</b><br>{html.escape(bands)} stretched {lo}–{hi} DN</div>'
