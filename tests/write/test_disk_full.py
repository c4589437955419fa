"""A full disk: a small tmpfs as --out. The run fails with a one-line "disk full" message, nothing
unreadable appears under a final name, and the manifest tells the truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import rasterio

from s2core.errors import OutputWriteError
from s2core.write.cog import verify_raster
from tests.conftest import MAPCHETE_CATALOG, ROOT, WIDE_AOI, needs_shared


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'not root'}): the full-disk test needs one")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _readable(path: Path) -> None:
    with rasterio.open(path) as ds:
        verify_raster(path, ds.count, ds.height, ds.width)
        ds.read()


@needs_shared
@pytest.mark.slow
def test_a_full_disk_fails_cleanly_and_leaves_nothing_unreadable(tiny_disk: Path):
    cmd = [sys.executable, "-m", "s2core", "-q", "run", "--aoi", WIDE_AOI, "--max-aoi-km2", "5000",
           "--start", "2023-08-01", "--end", "2023-08-31", "--catalog", str(MAPCHETE_CATALOG),
           "--bands", "B02,B03,B04,B08", "--resolution", "60", "--out", str(tiny_disk), "--run-id", "full"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode in (1, 2), res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "Disk full" in res.stderr + res.stdout, res.stderr + res.stdout
    run_dir = tiny_disk / "full"
    doc = json.loads((run_dir / "manifest.json").read_text())
    assert doc["status"] in ("failed", "partial"), doc["status"]
    assert any("Disk full" in (a.get("error") or "") for a in doc["acquisitions"])
    assert not list(run_dir.rglob("*.part")), "temporary files left on the full disk"
    for tif in run_dir.rglob("*.tif"):  # whatever has a final name is complete
        _readable(tif)
    completed = [a for a in doc["acquisitions"] if a["status"] == "completed"]
    for acq in completed:
        for rel in acq["outputs"].values():
            assert (run_dir / rel).is_file()


def test_a_truncated_file_fails_verification(tmp_path: Path):
    import numpy as np

    from s2core.model.grid import Grid
    from s2core.write.cog import write_cog
    from affine import Affine

    grid = Grid("EPSG:32633", Affine(10, 0, 500000, 0, -10, 5000000), 1200, 1100)
    path = write_cog(tmp_path / "x.tif", np.random.default_rng(0).integers(1, 9000, (2, 1100, 1200), dtype=np.uint16),
                     grid, nodata=0)
    verify_raster(path, 2, 1100, 1200)
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(OutputWriteError, match="not written completely"):
        verify_raster(cut, 2, 1100, 1200)


def test_a_write_that_hits_a_full_disk_raises_disk_full_and_leaves_nothing(tiny_disk: Path):
    import numpy as np
    from affine import Affine

    from s2core.errors import DiskFull
    from s2core.model.grid import Grid
    from s2core.write.cog import write_cog

    grid = Grid("EPSG:32633", Affine(10, 0, 500000, 0, -10, 5000000), 1500, 1500)
    noise = np.random.default_rng(1).integers(1, 60000, (2, 1500, 1500), dtype=np.uint16)  # 9 MB, incompressible
    with pytest.raises(DiskFull, match="Disk full while writing big.tif"):
        write_cog(tiny_disk / "big.tif", noise, grid, nodata=0)
    assert list(tiny_disk.iterdir()) == [], "a partial file was left on the full disk"


def _mount(path: Path, size: str) -> None:
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'not root'}): the full-disk test needs one")


@pytest.mark.parametrize("size", ["6m", "10m", "14m"])
def test_a_disk_that_fills_after_the_strips_fails_cleanly(tmp_path: Path, size: str):
    """GDAL compresses the strips' tiles in threads and reports a full disk only as it closes the files (the
    overview levels cut short) or not at all; the COG put together from them (10 MB here) fills the disk
    at any point: every size is the one-line "disk full" error, and nothing is left in the folder."""
    import numpy as np
    from affine import Affine
    from rasterio.windows import Window

    from s2core.errors import DiskFull
    from s2core.model.grid import Grid
    from s2core.write.cog import cog_strip_writer

    mount = tmp_path / "disk"
    _mount(mount, size)
    try:
        grid = Grid("EPSG:32633", Affine(10, 0, 0, 0, -10, 0), 1500, 1500)
        data = np.random.default_rng(0).integers(1, 4000, (2, 1500, 1500), dtype=np.uint16)  # 9 MB as DEFLATE
        with pytest.raises(DiskFull, match="Disk full while writing raster.tif"):
            with cog_strip_writer(mount / "run" / "raster.tif", grid, 2, "uint16", nodata=0) as dst:
                for r0 in range(0, 1500, 500):
                    dst.write(data[:, r0:r0 + 500], window=Window(0, r0, 1500, 500))
        assert list((mount / "run").iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_source_with_a_tile_never_written_is_a_damaged_file(tmp_path: Path):
    """A tile GDAL could not write (its offset left 0) would read as nodata: the COG is not put together."""
    import numpy as np

    from s2core.write.cog_assembly import assemble_cog

    src = tmp_path / "sparse.tif"
    with rasterio.open(src, "w", driver="GTiff", width=1024, height=1024, count=1, dtype="uint16", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", SPARSE_OK="TRUE") as ds:
        ds.write(np.ones((1, 512, 512), np.uint16), window=rasterio.windows.Window(0, 0, 512, 512))
    with pytest.raises(OSError, match="sparse.tif is damaged: a tile was never written"):
        assemble_cog(src, [], tmp_path / "out.tif")
