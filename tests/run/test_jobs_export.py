"""Background jobs (s2core.run.jobs) and run export (s2core.runfolder.export) on the real mapchete-eo scenes."""

from __future__ import annotations

import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from unittest.mock import patch
from pathlib import Path

import pytest

from s2core import make_request
import s2core.runfolder.export as export_module
from s2core.runfolder.export import human_size, run_files, zip_run
from s2core.run.jobs import JobManager
from tests.conftest import MAPCHETE_CATALOG, STRADDLE_WKT, needs_shared

pytestmark = needs_shared


def _request(out: Path, **kw: object):
    args = dict(aoi=STRADDLE_WKT, start="2023-08-10", end="2023-08-20", catalog=str(MAPCHETE_CATALOG),
                bands="B02,B03,B04,B08", resolution=120, out_dir=out)
    args.update(kw)
    return make_request(**args)


def test_job_runs_in_the_background_and_reports_each_acquisition(tmp_path: Path):
    manager = JobManager()
    job = manager.start(_request(tmp_path, masks={}))
    assert manager.running() == [job] or job.snapshot().done
    snap = job.wait(timeout=300)
    assert snap.status == "completed" and snap.error is None and snap.fraction == 1.0
    assert len(snap.acquisitions) == 5 and set(snap.acquisitions.values()) == {"completed"}
    assert all(": completed" in m for m in snap.acquisition_messages.values())
    assert (tmp_path / snap.run_id / "manifest.json").exists() and job.manifest.status == "completed"
    assert manager.running() == [] and manager.get(snap.job_id) is job


def test_cancel_stops_the_job_and_keeps_a_cancelled_manifest(tmp_path: Path):
    job = JobManager().start(_request(tmp_path, masks={}))
    job.cancel()
    snap = job.wait(timeout=300)
    assert snap.status == "cancelled" and snap.cancel_requested and "Cancelled" in snap.error
    assert "running" not in snap.acquisitions.values()
    # dates the cancel stopped are "cancelled", not "skipped" (skipped means the plan left them out)
    assert "skipped" not in snap.acquisitions.values() and "pending" not in snap.acquisitions.values()
    manifest = (tmp_path / snap.run_id / "manifest.json")
    assert not manifest.exists() or '"status": "cancelled"' in manifest.read_text().replace('":"', '": "')


def test_a_failing_job_gives_a_readable_message(tmp_path: Path):
    job = JobManager().start(_request(tmp_path, catalog=str(tmp_path / "nope" / "catalog.json")))
    snap = job.wait(timeout=60)
    assert snap.status == "failed" and "nope" in snap.error and "Traceback" not in snap.error


def test_export_lists_outputs_and_zips_atomically(tmp_path: Path):
    snap = JobManager().start(_request(tmp_path)).wait(timeout=300)
    run_dir = tmp_path / snap.run_id
    files = run_files(run_dir)
    kinds = [f.kind for f in files]
    assert kinds[0] == "manifest" and kinds.count("geotiff") == 15 and kinds.count("stac") == 5
    assert all(f.size == f.path.stat().st_size > 0 for f in files)
    z = zip_run(run_dir)
    assert z == tmp_path / f"{snap.run_id}.zip" and not list(tmp_path.glob(".*.tmp"))
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == sorted(f"{snap.run_id}/{f.name}" for f in files)
        assert zf.testzip() is None
    assert human_size(999) == "999 B" and human_size(1_500_000) == "1.5 MB"
    # two users at once: both get the zip, built once; a newer file of the run makes it be rebuilt
    z.unlink()
    writes: list[Path] = []
    real_write = export_module._write_zip
    with patch.object(export_module, "_write_zip", side_effect=lambda *a: writes.append(a[2]) or real_write(*a)):
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda _: zip_run(run_dir), range(2)))
        assert got == [z, z] and len(writes) == 1 and zipfile.ZipFile(z).testzip() is None
        later = z.stat().st_mtime_ns + 1_000_000_000
        os.utime(run_dir / "manifest.json", ns=(later, later))
        assert zip_run(run_dir) == z and len(writes) == 2


@pytest.mark.dask
@pytest.mark.slow
def test_job_on_a_local_dask_cluster(tmp_path: Path):
    snap = JobManager().start(_request(tmp_path), scheduler="local:2").wait(timeout=300)
    assert snap.status == "completed", snap.error
    assert set(snap.acquisitions.values()) == {"completed"} and len(snap.acquisitions) == 5
