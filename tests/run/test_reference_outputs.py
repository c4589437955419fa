"""Reference runs: the pixels, georeferencing and tags of every preprocessing output are those recorded in
``reference_outputs.json``, written by the code before the stage-subpackage restructuring (commit 2042ea8).

A change of behaviour (a resampling, an offset, a mosaic rule, a tag) shows here as a changed digest.
Model outputs are left out on purpose: ONNX Runtime's float results may differ in the last bits between
CPUs, which can flip a threshold; their code paths have their own tests. To record new references after
an intended change: ``python -m tests.run.test_reference_outputs OUT_ROOT`` prints the digests of the runs
under OUT_ROOT (made with the commands of :data:`RUNS`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from tests.conftest import MAPCHETE_CATALOG, ROOT, STRADDLE_WKT, WIDE_AOI, needs_shared

REFERENCE = Path(__file__).with_name("reference_outputs.json")
#: run id -> CLI arguments after ``python -m s2core``
RUNS: dict[str, list[str]] = {
    "pre3035": ["preprocess", "--aoi", STRADDLE_WKT, "--start", "2023-08-01", "--end", "2023-08-31",
                "--catalog", str(MAPCHETE_CATALOG), "--bands", "B02,B03,B04,B08", "--resolution", "60",
                "--downsampling", "median", "--crs", "EPSG:3035", "--output-format", "ENVI"],
    "sea120": ["preprocess", "--aoi", WIDE_AOI, "--start", "2023-08-10", "--end", "2023-08-15",
               "--catalog", str(MAPCHETE_CATALOG), "--bands", "B02,B03,B04,B08", "--resolution", "120",
               "--max-aoi-km2", "5000", "--land-sea-mask", "sea", "--cloud-mask", "product"],
}
#: tags that record where and when, not what
_VOLATILE_TAGS = {"TIFFTAG_DATETIME", "TIFFTAG_SOFTWARE"}


def raster_digest(path: Path) -> str:
    """SHA-256 of a raster's pixels, shape, CRS, transform, nodata, scales/offsets and tags (not its bytes:
    compression settings may change without changing what the file says)."""
    h = hashlib.sha256()
    with rasterio.open(path) as ds:
        h.update(json.dumps({
            "shape": [ds.count, ds.height, ds.width], "dtypes": list(ds.dtypes), "crs": ds.crs.to_wkt() if ds.crs else None,
            "transform": [round(v, 9) for v in ds.transform[:6]], "nodata": ds.nodata, "scales": list(ds.scales),
            "offsets": list(ds.offsets), "descriptions": list(ds.descriptions),
            "tags": {k: v for k, v in ds.tags().items() if k not in _VOLATILE_TAGS},
        }, sort_keys=True).encode())
        for i in range(1, ds.count + 1):
            h.update(ds.read(i).tobytes())
    return h.hexdigest()


def run_digests(run_dir: Path) -> dict[str, str]:
    """``acquisition/file`` -> digest for every raster of a run (COGs and the ENVI copy)."""
    out = {}
    for path in sorted(run_dir.glob("*/*")):
        if path.suffix in (".tif", ".dat"):
            out[f"{path.parent.name}/{path.name}"] = raster_digest(path)
    return out


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("run_id", sorted(RUNS))
def test_reference_run_outputs_are_unchanged(run_id: str, tmp_path: Path):
    expected = json.loads(REFERENCE.read_text(encoding="utf-8"))[run_id]
    cmd = [sys.executable, "-m", "s2core", "-q", *RUNS[run_id], "--out", str(tmp_path), "--run-id", run_id]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = run_digests(tmp_path / run_id)
    assert sorted(got) == sorted(expected), "the run wrote other files than the reference run"
    changed = [name for name in expected if got[name] != expected[name]]
    assert not changed, f"outputs differ from the reference run: {changed}"


if __name__ == "__main__":  # pragma: no cover - records references
    root = Path(sys.argv[1])
    print(json.dumps({run_id: run_digests(root / run_id) for run_id in sorted(RUNS)}, indent=1, sort_keys=True))
