"""Run lifecycle: a run killed (SIGKILL), interrupted (SIGINT) or stopped (SIGTERM) mid-run is recognised as
interrupted, leaves nothing half-written, and the same command resumes it without touching what was done;
the same run id twice at once, other parameters, and a wider date range (extend)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2core.runfolder.lifecycle import RunLock, effective_status
from s2core.runfolder.listing import list_runs
from tests.conftest import MAPCHETE_CATALOG, ROOT, WIDE_AOI, needs_shared

pytestmark = [needs_shared, pytest.mark.slow]


def _args(out: Path, run_id: str, *extra: str, start: str = "2023-08-01", end: str = "2023-08-31") -> list[str]:
    return [sys.executable, "-m", "s2core", "-q", "run", "--aoi", WIDE_AOI, "--max-aoi-km2", "5000", "--start", start,
            "--end", end, "--catalog", str(MAPCHETE_CATALOG), "--bands", "B02,B03,B04,B08", "--resolution", "120",
            "--out", str(out), "--run-id", run_id, *extra]


def _manifest(out: Path, run_id: str) -> dict:
    return json.loads((out / run_id / "manifest.json").read_text())


def _completed(out: Path, run_id: str) -> list[str]:
    try:
        return [a["id"] for a in _manifest(out, run_id)["acquisitions"] if a["status"] == "completed"]
    except (OSError, ValueError, KeyError):
        return []


def _stop_after_first(out: Path, run_id: str, sig: int) -> subprocess.Popen:
    proc = subprocess.Popen(_args(out, run_id), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _completed(out, run_id):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no acquisition completed in 2 minutes"
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


def _fingerprints(run_dir: Path, acq: str) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (run_dir / acq).iterdir()}


def _resume_and_check(out: Path, run_id: str, kept: list[str]) -> None:
    before = {a: _fingerprints(out / run_id, a) for a in kept}
    res = subprocess.run(_args(out, run_id), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(kept)} kept from the earlier run" in res.stdout, res.stdout
    doc = _manifest(out, run_id)
    assert doc["status"] == "completed" and set(kept) <= set(doc["resumed"])
    assert len(doc["acquisitions"]) == 3 and all(a["status"] == "completed" for a in doc["acquisitions"])
    for a in kept:  # neither read nor rewritten
        assert _fingerprints(out / run_id, a) == before[a]
    assert not list((out / run_id).rglob("*.part"))
    assert effective_status(out / run_id, doc["status"]) == "completed"


def test_sigkill_then_the_same_command_resumes(tmp_path: Path):
    proc = _stop_after_first(tmp_path, "k", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    kept = _completed(tmp_path, "k")
    assert _manifest(tmp_path, "k")["status"] == "running"  # a dead process cannot say more ...
    assert [r.status for r in list_runs(tmp_path)] == ["interrupted"]  # ... but its lock went with it
    _resume_and_check(tmp_path, "k", kept)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_end_the_run_as_interrupted_and_it_resumes(tmp_path: Path, sig: int):
    proc = _stop_after_first(tmp_path, "i", sig)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 130, err
    assert "--run-id i resumes it" in err and "Traceback" not in err
    doc = _manifest(tmp_path, "i")
    assert doc["status"] == "interrupted" and doc["finished"]
    assert not list((tmp_path / "i").rglob("*.part"))
    _resume_and_check(tmp_path, "i", _completed(tmp_path, "i"))


def test_the_same_run_id_twice_at_once_is_refused(tmp_path: Path):
    (tmp_path / "twice").mkdir()
    lock = RunLock(tmp_path / "twice").acquire()  # another live process writing run "twice"
    try:
        res = subprocess.run(_args(tmp_path, "twice"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        lock.release()
    assert res.returncode == 2
    assert f"being written by another process (pid {os.getpid()}" in res.stderr, res.stderr
    assert not (tmp_path / "twice" / "manifest.json").exists()


def test_other_parameters_are_refused_and_a_wider_date_range_extends_the_run(tmp_path: Path):
    first = subprocess.run(_args(tmp_path, "e", start="2023-08-10", end="2023-08-12"), cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    kept = _completed(tmp_path, "e")
    assert len(kept) == 1
    other = subprocess.run(_args(tmp_path, "e", "--dilation", "2"), cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 2 and "other parameters (masks.dilation)" in other.stderr, other.stderr
    _resume_and_check(tmp_path, "e", kept)


def test_a_stopped_run_of_a_local_product_says_that_the_same_command_resumes_it(tmp_path: Path):
    """--input runs are named after their product: the one-line message says so, and the same command resumes."""
    from tests.safe_products import build_rkh_l2a, rkh_window

    safe = build_rkh_l2a(tmp_path / "in", rkh_window(1080, 0, 0))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "s2core", "-q", "run", "--input", str(safe), "--resolution", "20", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/manifest.json")):  # the run has started
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not start in 2 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    run_id = safe.name.removesuffix(".SAFE")
    assert proc.returncode == 130, err
    assert f"run {run_id} keeps its completed acquisitions; the same command resumes it." in err, err
    assert "Traceback" not in err and not list(out.rglob("*.part"))
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert _manifest(out, run_id)["status"] == "completed"
