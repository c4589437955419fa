"""Benchmark: the shadow check on the real dates of the shared mapchete catalog (33TWL/33TWM, 120 m).

Three runs of the same five dates (WIDE_AOI, the 4-band U-Net):

* ``reference``: the reference's merge — thresholds 0.3 / 0.2, dilation 5 px, no shadow check;
* ``reference-check``: the same with ``shadow_check=filter`` (the check's own effect);
* ``defaults``: s2core's defaults — the model's own decision (argmax), 50 m dilation, the check.

Per date: the merged mask's shadow share of the AOI's valid pixels; the share of those shadow pixels
that no cloud can cast (outside the corridor of the product's clouds and the merged mask's, clouds up
to 12 km, pixels without data and beyond the AOI counted as possible cloud; measured after the dilation, which widens what the
check kept); and the cloud and shadow IoU with the product's
SCL classes. Run: ``python benchmarks/bench_shadow_check.py`` (about a minute).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2core import make_request, preprocess  # noqa: E402
from s2core.model.classes import CLOUD, NODATA, SHADOW  # noqa: E402
from s2core.model.decision import REFERENCE_DECISION  # noqa: E402
from s2core.shadows import check_shadows  # noqa: E402
from tests.conftest import MAPCHETE_CATALOG, WIDE_AOI  # noqa: E402

REFERENCE = dict(shadow_check="off", dilation=5, cloud_thr=REFERENCE_DECISION.cloud_thr,
                 shadow_thr=REFERENCE_DECISION.shadow_thr)
RUNS = {"reference": REFERENCE, "reference-check": {**REFERENCE, "shadow_check": "filter"}, "defaults": {}}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def figures(folder: Path) -> dict[str, float]:
    """Shadow share, unreachable shadow share, cloud / shadow IoU with SCL, of one acquisition folder."""
    merged, product = _read(folder / "mask.tif"), _read(folder / "product_mask.tif")
    with rasterio.open(folder / "mask.tif") as ds:
        tags, pixel = ds.tags(), ds.res[0]
    valid = merged != NODATA
    shadow = merged == SHADOW
    # the product's clouds and the run's own; pixels without data may hide a cloud (as in the check)
    clouds = (product == CLOUD) | (merged == CLOUD) | ~valid
    reachable = check_shadows(clouds, shadow, float(tags["SUN_AZIMUTH"]), 90 - float(tags["SUN_ELEVATION"]), pixel,
                              outside=True)

    def iou(code: int) -> float:
        a, b = (merged == code) & valid, (product == code) & valid
        union = (a | b).sum()
        return float((a & b).sum() / union) if union else float("nan")

    n = int(shadow.sum())
    return {"shadow": float(shadow[valid].mean()), "unreachable": float((n - reachable.sum()) / n) if n else 0.0,
            "cloud_iou": iou(CLOUD), "shadow_iou": iou(SHADOW), "scl_shadow": float((product == SHADOW)[valid].mean())}


def main() -> int:
    if not MAPCHETE_CATALOG.exists():
        print(f"skip: {MAPCHETE_CATALOG} not found (needs ../shared/data)")
        return 0
    out = Path(tempfile.mkdtemp(prefix="s2core-shadows-"))
    table: dict[str, dict[str, dict[str, float]]] = {}
    for run_id, masks in RUNS.items():
        manifest = preprocess(make_request(
            aoi=WIDE_AOI, start="2023-08-10", end="2023-08-20", catalog=str(MAPCHETE_CATALOG),
            bands="B02,B03,B04,B08", resolution=120, out_dir=out, run_id=run_id, max_aoi_km2=10_000,
            min_tile_cover=0.5, masks=masks))
        table[run_id] = {a.datetime[:10]: figures(out / run_id / a.id) for a in manifest.acquisitions
                         if a.status == "completed"}
    dates = sorted(table["reference"])
    print("per date: merged shadow % of valid pixels | shadow no cloud can cast % | cloud IoU | shadow IoU "
          "with SCL (SCL's own shadow %)")
    print(f"{'date':<11}" + "".join(f"{r:>36}" for r in RUNS))
    for d in dates:
        cells = []
        for r in RUNS:
            f = table[r][d]
            cells.append(f"{100 * f['shadow']:6.2f} {100 * f['unreachable']:5.1f} {f['cloud_iou']:5.2f} "
                         f"{f['shadow_iou']:5.2f}")
        print(f"{d:<11}" + "".join(f"{c:>36}" for c in cells) + f"   (SCL {100 * table['reference'][d]['scl_shadow']:.2f})")
    for r in RUNS:
        mean = np.nanmean([table[r][d]["shadow_iou"] for d in dates])
        print(f"{r}: mean shadow IoU with SCL {mean:.3f}, mean shadow {100 * np.mean([table[r][d]['shadow'] for d in dates]):.2f} %")
    import shutil

    shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
