"""Scale-out on a real Dask LocalCluster (2 worker processes) over the shared mapchete-eo scenes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from s2core import make_request, preprocess
from s2core.run.batch import preprocess_batch, split_features
from s2core.cli import main
from s2core.run.cluster import DEFAULT_RETRIES, cluster_client
from s2core.errors import Cancelled
from s2core.masks.engine import session_stats
from s2core.progress import CancelToken, ProgressEvent
from tests.conftest import MAPCHETE_CATALOG, STRADDLE_WKT, mapchete_items, needs_shared

pytestmark = needs_shared
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with cluster_client("local:2") as c:
        yield c


def _request(out: Path, run_id: str, catalog: str = str(MAPCHETE_CATALOG), **kw: Any):
    args: dict[str, Any] = dict(aoi=STRADDLE_WKT, start="2023-08-10", end="2023-08-20", catalog=catalog,
                                bands="B02,B03,B04,B08", resolution=120, out_dir=out, run_id=run_id, masks={})
    args.update(kw)
    return make_request(**args)


def _digests(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*.tif"))}


def test_cluster_outputs_are_bit_identical_and_models_load_once_per_worker(tmp_path: Path, client):
    local = preprocess(_request(tmp_path, "local"))
    events: list[ProgressEvent] = []
    remote = preprocess(_request(tmp_path, "cluster"), progress=events.append, scheduler=client)
    assert local.status == remote.status == "completed"
    a, b = _digests(tmp_path / "local"), _digests(tmp_path / "cluster")
    assert len(a) == 5 * 6 and a == b
    strip = lambda m: [{k: v for k, v in x.model_dump().items() if k != "seconds"} for x in m.acquisitions]  # noqa: E731
    assert strip(local) == strip(remote)
    # progress came from the workers, through the same callback
    assert any(e.acquisition and "read B0" in e.message for e in events)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # one ONNX session per worker process, whatever the number of tasks it ran
    stats = client.run(session_stats)
    assert len(stats) == 2 and all(s["created"] <= 1 and s["cached"] <= 1 for s in stats.values())
    assert sum(s["created"] for s in stats.values()) >= 1


def test_a_task_that_always_fails_is_reported_and_the_rest_written(tmp_path: Path, client):
    items = []
    for item, path in mapchete_items():
        it = copy.deepcopy(item)
        it["links"] = []
        for asset in it["assets"].values():
            href = asset.get("href", "")
            if not href.startswith(("http://", "https://", "s3://")):
                asset["href"] = str((path.parent / href).resolve())
        if "20230815" in it["id"]:
            it["assets"]["red"]["href"] = str(tmp_path / "gone" / "B04.tif")
        items.append(it)
    catalog = tmp_path / "items.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    events: list[ProgressEvent] = []
    m = preprocess(_request(tmp_path, "broken", catalog=str(catalog)), progress=events.append, scheduler=client)
    assert m.status == "partial"
    deadline = time.monotonic() + 10  # worker events travel apart from results: allow them to arrive
    while True:
        starts = [e for e in list(events) if "started on worker" in e.message]
        attempts = sum(1 for e in starts if e.acquisition.startswith("20230815"))
        if attempts >= 1 + DEFAULT_RETRIES or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert attempts == 1 + DEFAULT_RETRIES, attempts  # tried, retried a bounded number of times, then reported
    assert all(sum(1 for e in starts if e.acquisition == a.id) == 1 for a in m.acquisitions if a.status == "completed")
    failed = [a for a in m.acquisitions if a.status == "failed"]
    assert [a.id[:8] for a in failed] == ["20230815"] and "B04" in failed[0].error
    assert sum(a.status == "completed" for a in m.acquisitions) == 4
    assert not (tmp_path / "broken" / failed[0].id / "raster.tif").exists()
    doc = json.loads((tmp_path / "broken" / "manifest.json").read_text())
    assert doc["status"] == "partial" and len(doc["acquisitions"]) == 5


def test_cancel_stops_the_cluster_tasks(tmp_path: Path, client):
    token = CancelToken()
    events: list[ProgressEvent] = []
    first_read = threading.Event()
    threading.Thread(target=lambda: (first_read.wait(60), token.cancel()), daemon=True).start()
    with pytest.raises(Cancelled):
        preprocess(_request(tmp_path, "cancelled"), progress=_chain(events, first_read),
                   cancel=token, scheduler=client)
    doc = json.loads((tmp_path / "cancelled" / "manifest.json").read_text())
    assert doc["status"] == "cancelled"
    assert sum(a["status"] == "completed" for a in doc["acquisitions"]) < 5
    deadline = time.monotonic() + 20
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(client.processing().values()), client.processing()


def _chain(events: list[ProgressEvent], first_read: threading.Event):
    def on(event: ProgressEvent) -> None:
        events.append(event)
        if event.acquisition and "read " in event.message and "(" in event.message:
            first_read.set()
    return on


def test_a_killed_worker_does_not_lose_the_run(tmp_path: Path):
    with cluster_client("local:2") as c:
        pids = c.run(os.getpid)
        killed: list[int] = []

        def on(event: ProgressEvent) -> None:
            if not killed and event.acquisition and "read " in event.message and "(" in event.message:
                pid = next(iter(pids.values()))
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)

        m = preprocess(_request(tmp_path, "killed", masks=None), progress=on, scheduler=c)
        assert killed, "no worker was killed"
        assert m.status == "completed" and sum(a.status == "completed" for a in m.acquisitions) == 5
        assert len(_digests(tmp_path / "killed")) == 5 * 3


def test_batch_of_aois_is_one_graph_and_matches_single_runs(tmp_path: Path, client):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "north", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [[[15.9, 46.3], [16.0, 46.3], [16.0, 46.4], [15.9, 46.4],
                                                           [15.9, 46.3]]]}},
        {"type": "Feature", "properties": {"name": "straddle"},
         "geometry": json.loads(json.dumps({"type": "Polygon", "coordinates": [[[15.9, 45.9], [16.1, 45.9],
                                                                               [16.1, 46.1], [15.9, 46.1],
                                                                               [15.9, 45.9]]]}))},
        {"type": "Feature", "properties": {"name": "nowhere"},
         "geometry": {"type": "Polygon", "coordinates": [[[100, 10], [100.1, 10], [100.1, 10.1], [100, 10.1],
                                                           [100, 10]]]}},
    ]}
    path = tmp_path / "fields.geojson"
    path.write_text(json.dumps(fc))
    names = [n for n, _ in split_features(path)]
    assert names == ["north", "straddle", "nowhere"]
    requests = [_request(tmp_path, f"b-{n}", aoi=g, masks=None) for n, g in split_features(path)]
    results = preprocess_batch(requests, scheduler=client)
    assert [r.run_id for r in results] == ["b-north", "b-straddle", "b-nowhere"]
    assert results[0].manifest.status == results[1].manifest.status == "completed"
    assert results[2].manifest is None and results[2].error
    preprocess(_request(tmp_path, "single", masks=None))
    assert _digests(tmp_path / "b-straddle") == _digests(tmp_path / "single")
    # the CLI's --batch --scheduler does the same, one line per run
    code = main(["-q", "preprocess", "--aoi", str(path), "--batch", "--scheduler", client.scheduler.address,
                 "--start", "2023-08-10", "--end", "2023-08-20", "--catalog", str(MAPCHETE_CATALOG),
                 "--bands", "B02,B03,B04,B08", "--resolution", "120", "--out", str(tmp_path / "cli"),
                 "--run-id", "cli"])
    assert code == 1  # "nowhere" could not start
    assert _digests(tmp_path / "cli" / "cli-straddle") == _digests(tmp_path / "single")


def test_bad_scheduler_values_are_explained(tmp_path: Path):
    from s2core.errors import InvalidParameter

    for spec, fragment in (("lokal", "not understood"), ("local:x", "local:N"), ("local:0", "between 1 and 256")):
        with pytest.raises(InvalidParameter, match=fragment):
            preprocess(_request(tmp_path, "bad", masks=None), scheduler=spec)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    with pytest.raises(InvalidParameter, match="Cannot reach the Dask scheduler"):
        preprocess(_request(tmp_path, "unreachable", masks=None), scheduler="tcp://127.0.0.1:1")


def test_workers_never_rerun_the_callers_main_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """As under Streamlit, where the page being run is ``__main__``: workers must not execute it."""
    import types

    marker = tmp_path / "page-ran"
    page = tmp_path / "page.py"
    page.write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit('a page, not a worker')\n")
    fake = types.ModuleType("__main__")
    fake.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake)
    with cluster_client("local:1") as c:
        assert c.submit(lambda: 41 + 1).result(timeout=60) == 42
        pid = next(iter(c.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)  # the restarted worker must not run it either
        assert c.submit(lambda: 6 * 7, pure=False).result(timeout=120) == 42
    assert not marker.exists()


def test_batch_input_errors_name_the_problem(tmp_path: Path):
    from s2core.errors import InvalidAOI

    with pytest.raises(InvalidAOI, match="does not exist"):
        split_features(str(tmp_path / "fields.geojson"))
    with pytest.raises(InvalidAOI, match="FeatureCollection"):
        split_features('{"type": "Polygon", "coordinates": []}')
