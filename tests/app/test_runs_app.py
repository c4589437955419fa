"""Run listing and the Streamlit home page (AppTest)."""

from __future__ import annotations

import json
from pathlib import Path

from s2core.runfolder.listing import list_runs


def _fake_run(root: Path, run_id: str, created: str, statuses: list[str]) -> None:
    d = root / run_id
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({
        "run_id": run_id, "status": "completed", "created": created,
        "acquisitions": [{"id": f"a{i}", "status": s} for i, s in enumerate(statuses)]}))


def test_list_runs_newest_first_and_skips_broken(tmp_path: Path):
    _fake_run(tmp_path, "old", "2026-01-01T00:00:00Z", ["completed"])
    _fake_run(tmp_path, "new", "2026-02-01T00:00:00Z", ["completed", "failed"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == ["new", "old"]
    assert runs[0].completed == 1 and runs[0].failed == 1
    assert list_runs(tmp_path / "missing") == []
