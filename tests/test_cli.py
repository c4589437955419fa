"""The command line: progress, where outputs are, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import INSIDE_TWM_WKT, MAPCHETE_CATALOG, ROOT, needs_shared, one_line_error


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@needs_shared
def test_preprocess_writes_run_and_prints_where(tmp_path: Path):
    aoi_file = tmp_path / "aoi.geojson"
    import shapely.geometry
    import shapely.wkt

    aoi_file.write_text(json.dumps(shapely.geometry.mapping(shapely.wkt.loads(INSIDE_TWM_WKT))))
    res = _cli("preprocess", "--aoi", str(aoi_file), "--start", "2023-08-13", "--end", "2023-08-15",
               "--catalog", str(MAPCHETE_CATALOG), "--out", str(tmp_path / "out"), "--bands", "B04,B08",
               "--run-id", "cli-run")
    assert res.returncode == 0, res.stderr
    assert f"written to {tmp_path / 'out' / 'cli-run'}" in res.stdout
    manifest = json.loads((tmp_path / "out" / "cli-run" / "manifest.json").read_text())
    assert [a["id"] for a in manifest["acquisitions"]] == ["20230813_S2B_R122", "20230815_S2A_R079"]
    # the same run id with other parameters is refused, nothing overwritten
    raster = tmp_path / "out" / "cli-run" / "20230813_S2B_R122" / "raster.tif"
    stamp = raster.stat().st_mtime_ns
    again = _cli("preprocess", "--aoi", str(aoi_file), "--start", "2023-08-13", "--end", "2023-08-15",
                 "--catalog", str(MAPCHETE_CATALOG), "--out", str(tmp_path / "out"), "--bands", "B04",
                 "--run-id", "cli-run")
    assert again.returncode == 2 and "other parameters (bands)" in again.stderr, again.stderr
    assert raster.stat().st_mtime_ns == stamp


@needs_shared
def test_search_lists_selected_and_skipped(tmp_path: Path):
    res = _cli("search", "--aoi", "POLYGON((14.9 46.3, 15.1 46.3, 15.1 46.4, 14.9 46.4, 14.9 46.3))",
               "--start", "2023-08-01", "--end", "2023-08-31", "--catalog", str(MAPCHETE_CATALOG),
               "--min-tile-cover", "0.99")
    assert res.returncode == 0
    assert "0 acquisition(s) selected, 2 skipped" in res.stdout and "below min_tile_cover=0.99" in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["--aoi", "POINT(16 46)"], "not an area"),
    (["--end", "2023-07-01"], "before the start date"),
    (["--bands", "B02,B99"], "Unknown band(s) B99"),
    (["--catalog", "/nope/catalog.json"], "neither 'pc'"),
    (["--min-tile-cover", "2"], "min_tile_cover"),
    (["--out", "/proc/s2core-cannot-write-here"], "Cannot create the run folder"),
])
def test_bad_input_one_line_exit_2(tmp_path: Path, args, needle):
    base = {"--aoi": INSIDE_TWM_WKT, "--start": "2023-08-13", "--end": "2023-08-15",
            "--catalog": str(MAPCHETE_CATALOG), "--out": str(tmp_path)}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    res = _cli("preprocess", *[x for kv in base.items() for x in kv])
    one_line_error(res, needle)
    assert not any(tmp_path.iterdir())


def test_pc_key_not_echoed(tmp_path: Path):
    secret = "SECRETKEY0123456789abcdef"
    res = _cli("preprocess", "--aoi", "POINT(1 2)", "--start", "2023-08-13", "--end", "2023-08-15",
               "--pc-key", secret, "--out", str(tmp_path))
    assert res.returncode == 2 and secret not in res.stdout + res.stderr


@pytest.mark.parametrize("argv,quiet,verbose", [
    (["-q", "models"], True, False),
    (["models", "-q"], True, False),
    (["models"], False, False),
    (["-v", "run", "--input", "x.SAFE", "--quiet"], True, True),
])
def test_global_flags_before_or_after_the_command(argv, quiet, verbose):
    from s2core.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.quiet, args.verbose) == (quiet, verbose)


@pytest.mark.parametrize("env,needle", [
    ({"S2CORE_THREADS": "abc"}, "S2CORE_THREADS='abc'"),
    ({"S2CORE_MAX_AOI_KM2": "-5"}, "S2CORE_MAX_AOI_KM2='-5'"),
])
def test_an_unusable_setting_is_one_line_naming_the_variable(env: dict[str, str], needle: str):
    import os

    res = subprocess.run([sys.executable, "-m", "s2core", "models"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env})
    assert "unset it" in one_line_error(res, needle, prefix="error: Invalid environment setting")


def test_cli_defaults_come_from_the_request_model():
    from s2core.cli import build_parser
    from s2core.model.request import MaskOptions, PreprocessRequest

    run = build_parser().parse_args(["run", "--aoi", "x", "--start", "2023-01-01", "--end", "2023-01-02"])
    for field in ("resolution", "min_tile_cover", "dl_timeout", "max_retries", "read_workers", "upsampling",
                  "downsampling", "flag_downsampling", "land_sea_mask", "cloud_mask", "output_format"):
        assert getattr(run, field) == PreprocessRequest.model_fields[field].default, field
    for field in ("cloud_thr", "shadow_thr", "dilation", "min_area", "batch_size", "shadow_model"):
        assert getattr(run, field) == MaskOptions.model_fields[field].default, field
