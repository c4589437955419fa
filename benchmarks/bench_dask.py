"""Benchmark: the five-date mapchete-eo run (preprocess + masks) in-process vs a Dask LocalCluster.

Same request, same machine, one run of each:

* in-process (the default: acquisitions one after the other, band reads in parallel threads);
* LocalCluster with 2 worker processes (1 thread each), cluster start-up timed separately;

then per-task figures measured here (seconds, bytes read, bytes written, peak worker memory)
and a scaling sketch for a 100-tile, one-season job derived from them. The data are whole
tiles at 120 m (the shared test files), over a 62 x 67 km AOI covering both tiles.

Run: ``python benchmarks/bench_dask.py``
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import MAPCHETE_CATALOG, WIDE_AOI  # noqa: E402


def request(out: Path, run_id: str):
    from s2core import make_request

    return make_request(aoi=WIDE_AOI, start="2023-08-10", end="2023-08-20", catalog=str(MAPCHETE_CATALOG),
                        bands="B02,B03,B04,B08", resolution=120, out_dir=out, run_id=run_id, max_aoi_km2=10_000,
                        min_tile_cover=0.5, masks={})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    import distributed

    from s2core import preprocess

    work = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    preprocess(request(work, "warm"))  # page cache and model files warm for both sides

    t = time.perf_counter()
    local = preprocess(request(work, "inprocess"))
    t_local = time.perf_counter() - t

    t = time.perf_counter()
    from s2core.run.cluster import worker_env

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       memory_limit="4GiB", env=worker_env(1))
    client = distributed.Client(cluster)
    t_start = time.perf_counter() - t
    try:
        t = time.perf_counter()
        remote = preprocess(request(work, "cluster"), scheduler=client)
        t_cluster = time.perf_counter() - t
        t = time.perf_counter()
        preprocess(request(work, "cluster-warm"), scheduler=client)
        t_cluster_warm = time.perf_counter() - t
        worker_rss = client.run(peak_rss_mb)
    finally:
        client.close()
        cluster.close()

    n = len(local.acquisitions)
    grid = local.grid
    px = grid["width"] * grid["height"]
    out_bytes = [sum((work / "inprocess" / p).stat().st_size for p in a.outputs.values()) for a in local.acquisitions]
    secs = [a.seconds or 0.0 for a in remote.acquisitions]
    print(f"five-date run, {n} acquisitions, grid {grid['width']} x {grid['height']} px at {grid['resolution']:.0f} m, "
          f"4 bands + masks (ukis-csmask-4b-l2a)")
    print(f"{'mode':>34} {'wall s':>8}")
    print(f"{'in-process (default)':>34} {t_local:8.2f}")
    print(f"{'LocalCluster 2 workers, cold':>34} {t_cluster:8.2f}   (+ {t_start:.2f} s cluster start)")
    print(f"{'LocalCluster 2 workers, warm':>34} {t_cluster_warm:8.2f}   (sessions cached per worker)")
    print(f"{'speed-up (warm cluster)':>34} {t_local / t_cluster_warm:8.2f}x")
    print()
    print("per task (one acquisition), measured:")
    print(f"  seconds on a worker     mean {sum(secs) / n:.2f}  max {max(secs):.2f}")
    print(f"  bytes written           mean {sum(out_bytes) / n / 1e6:.2f} MB  ({sum(out_bytes) / n / px:.2f} B/px)")
    if local.bytes_read:
        print(f"  bytes read (GDAL count) mean {local.bytes_read / n / 1e6:.2f} MB")
    print(f"  peak worker RSS         {', '.join(f'{v:.0f} MB' for v in worker_rss.values())}")
    print()
    # scaling sketch: a season (Apr-Sep, ~36 passes per tile at 5-day revisit) over 100 tiles at 10 m, 12 bands
    tasks = 100 * 36
    full_px = 10980 * 10980
    b_per_px_12 = 12 * 2 * 0.6 + 3 * 0.3  # 12 uint16 bands deflated (~0.6) + 3 uint8 mask rasters (~0.3)
    print(f"scaling sketch, 100 tiles x one season (~36 passes per tile) = {tasks} tasks, one per tile-pass:")
    print(f"  measured here per task: {sum(secs) / n:.2f} s on a 1-thread worker for {px / 1e6:.2f} MPx "
          f"(4 bands + masks), {sum(out_bytes) / n / px:.1f} B/px written, peak worker RSS "
          f"{max(worker_rss.values()):.0f} MB")
    print("  full tile-pass (12 bands, 10980^2): masks stage 75 s and 2.07 GB with in_memory off "
          "(benchmarks/bench_masking_memory.py), plus reading ~1 GB of COG ranges (I/O bound) and writing "
          f"~{b_per_px_12 * full_px / 1e9:.1f} GB")
    print(f"  whole job: ~{tasks * b_per_px_12 * full_px / 1e12:.1f} TB written; at ~3 min per tile-pass per 2-core "
          f"worker: {tasks * 3 / 60:.0f} worker-hours -> 45 h on 4 such workers, 9 h on 20")
    print("  memory per worker: the stacked raster (12 x 120.6 MPx x 2 B = 2.9 GB for a whole tile; default AOI "
          "limit 2500 km2 = 0.6 GB) + masks stage <= 2.1 GB -> 4-6 GiB per 1-thread worker; split tiles into "
          "AOIs (--batch) to stay under 4 GiB")
    print(f"  on this 2-core machine the cluster is {t_local / t_cluster_warm:.2f}x the in-process run: the "
          "in-process run already keeps both cores busy; the gain comes from adding machines")


if __name__ == "__main__":
    main()
