"""s2core.runfolder.listing: list the runs under an output root (for the app and the tile server)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from s2core.runfolder.lifecycle import effective_status
from s2core.runfolder.manifest import MANIFEST_NAME


@dataclass(frozen=True)
class RunSummary:
    """One run folder, read from its manifest."""

    run_id: str
    status: str
    created: str
    completed: int
    failed: int
    path: Path


def run_folders(root: Path) -> list[Path]:
    """The folders directly under ``root`` that hold a run (a ``manifest.json``)."""
    if not Path(root).is_dir():
        return []
    return sorted(p.parent for p in Path(root).glob(f"*/{MANIFEST_NAME}"))


def list_runs(root: Path) -> list[RunSummary]:
    """Runs under ``root`` (newest first); folders with an unreadable manifest are skipped."""
    out: list[RunSummary] = []
    for folder in run_folders(root):
        manifest = folder / MANIFEST_NAME
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
            acqs = doc.get("acquisitions", [])
            out.append(RunSummary(
                run_id=str(doc["run_id"]), status=effective_status(folder, str(doc.get("status", "?"))), created=str(doc.get("created", "")),
                completed=sum(a.get("status") == "completed" for a in acqs),
                failed=sum(a.get("status") == "failed" for a in acqs), path=manifest.parent,
            ))
        except (OSError, ValueError, KeyError):
            continue
    return sorted(out, key=lambda r: r.created, reverse=True)
