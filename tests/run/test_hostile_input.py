"""Names that become paths, and parameters a clumsy user or an adversary may give: hostile catalog metadata,
run ids, manifests pointing outside, zip slip, file permissions, and one-line errors for bad values."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from s2core.model.request import valid_id
from s2core.runfolder.export import run_files, zip_run
from tests.conftest import (INSIDE_TWM_WKT, MAPCHETE_CATALOG, ROOT, mapchete_items, needs_shared, one_line_error,
                            with_absolute_hrefs)


def _cli(*args: str, umask: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "s2core", "-q", *args]
    if umask is not None:  # the process's umask, as a shell would set it
        cmd = ["sh", "-c", f"umask {umask} && exec \"$@\"", "sh", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _hostile_catalog(folder: Path, **props: object) -> Path:
    """The mapchete-eo items of 2023-08-13..15 as a folder of item JSONs (absolute hrefs) with ``props`` set."""
    folder.mkdir(parents=True)
    for item, path in mapchete_items():
        if not ("2023-08-13" <= item["properties"]["datetime"][:10] <= "2023-08-15"):
            continue
        it = with_absolute_hrefs(item, path)
        for key, value in props.items():
            if value is None:
                it["properties"].pop(key, None)
            else:
                it["properties"][key] = value
        (folder / f"{it['id']}.json").write_text(json.dumps(it))
    return folder


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@needs_shared
@pytest.mark.parametrize("props", [
    {"platform": "x/../../../../pwned"},
    {"platform": "/etc/cron.d/x", "sat:relative_orbit": None, "s2:datatake_id": "../../up/../and/away"},
])
def test_hostile_metadata_never_writes_outside_the_run_folder(tmp_path: Path, props: dict[str, object]):
    catalog = _hostile_catalog(tmp_path / "catalog", **props)
    out = tmp_path / "out" / "runs"
    out.mkdir(parents=True)
    before = _files_under(tmp_path) - _files_under(out)
    res = _cli("preprocess", "--aoi", INSIDE_TWM_WKT, "--start", "2023-08-13", "--end", "2023-08-15",
               "--catalog", str(catalog), "--bands", "B04,B08", "--out", str(out), "--run-id", "hostile")
    assert res.returncode == 0, res.stderr
    assert _files_under(tmp_path) - _files_under(out) == before, "files appeared outside --out"
    manifest = json.loads((out / "hostile" / "manifest.json").read_text())
    ids = [a["id"] for a in manifest["acquisitions"]]
    assert ids and all(valid_id(i) for i in ids), ids
    for acq in manifest["acquisitions"]:
        for rel in acq["outputs"].values():
            assert (out / "hostile" / rel).resolve().is_relative_to(out / "hostile")


@pytest.mark.parametrize("run_id", ["../../x", "/abs/olute", "a" * 300, "..", "a/b", "-dash", "x\ny"])
def test_run_ids_that_are_not_folder_names_are_refused(tmp_path: Path, run_id: str):
    res = _cli("preprocess", "--aoi", INSIDE_TWM_WKT, "--start", "2023-08-13", "--end", "2023-08-15",
               "--catalog", str(MAPCHETE_CATALOG), "--out", str(tmp_path / "out"), f"--run-id={run_id}")
    one_line_error(res, "cannot be a folder name")
    assert not any(tmp_path.iterdir()) and not Path("/abs").exists()


@needs_shared
def test_export_lists_and_zips_only_files_inside_the_run(tmp_path: Path):
    out = tmp_path / "runs"
    res = _cli("preprocess", "--aoi", INSIDE_TWM_WKT, "--start", "2023-08-13", "--end", "2023-08-13",
               "--catalog", str(MAPCHETE_CATALOG), "--bands", "B04,B08", "--out", str(out), "--run-id", "r1")
    assert res.returncode == 0, res.stderr
    secret = tmp_path / "secret.tif"
    secret.write_bytes(b"II*\x00 not for you")
    manifest_path = out / "r1" / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    acq = doc["acquisitions"][0]["id"]
    (out / "r1" / acq / "link.tif").symlink_to(secret)
    doc["acquisitions"][0]["outputs"].update({"up": "../../secret.tif", "abs": str(secret), "link": f"{acq}/link.tif"})
    manifest_path.write_text(json.dumps(doc))
    names = {f.name for f in run_files(out / "r1")}
    assert not names & {"../../secret.tif", str(secret), f"{acq}/link.tif"}
    assert f"{acq}/raster.tif" in names
    with zipfile.ZipFile(zip_run(out / "r1")) as zf:
        entries = zf.namelist()
    assert entries and all(e.startswith("r1/") and ".." not in e.split("/") for e in entries), entries


@needs_shared
@pytest.mark.parametrize("umask, mode", [("022", 0o644), ("027", 0o640)])
def test_outputs_honour_the_umask(tmp_path: Path, umask: str, mode: int):
    res = _cli("preprocess", "--aoi", INSIDE_TWM_WKT, "--start", "2023-08-13", "--end", "2023-08-13",
               "--catalog", str(MAPCHETE_CATALOG), "--bands", "B04,B08", "--out", str(tmp_path), "--run-id", "u",
               umask=umask)
    assert res.returncode == 0, res.stderr
    files = [p for p in (tmp_path / "u").rglob("*") if p.is_file()]
    assert len(files) >= 5
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {mode}, {p.name: oct(p.stat().st_mode) for p in files}


@pytest.mark.parametrize("args, needle", [
    (["--dl-timeout", "inf"], "dl_timeout: Input should be a finite number"),
    (["--max-aoi-km2", "nan"], "max_aoi_km2: Input should be a finite number"),
    (["--scheduler", "ftp://x"], "ftp:// is not a Dask protocol"),
    (["--bands", "B04,B04,B02"], "Band B04 is listed twice"),
    (["--aoi", "POLYGON((495 46.3, 496 46.3, 496 46.4, 495 46.4, 495 46.3))"], "AOI longitude 496 is outside -180..180"),
])
def test_validation_gaps_are_one_line_errors(tmp_path: Path, args: list[str], needle: str):
    base = {"--aoi": INSIDE_TWM_WKT, "--start": "2023-08-13", "--end": "2023-08-15",
            "--catalog": str(MAPCHETE_CATALOG), "--out": str(tmp_path / "out")}
    base.update(dict(zip(args[::2], args[1::2])))
    res = _cli("preprocess", *[x for kv in base.items() for x in kv])
    one_line_error(res, needle)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_text_file_given_as_a_model_is_not_an_onnx_model(tmp_path: Path):
    fake = tmp_path / "clouds.onnx"
    fake.write_text("this is not a model\n")
    res = _cli("run", "--aoi", INSIDE_TWM_WKT, "--start", "2023-08-13", "--end", "2023-08-15",
               "--catalog", str(MAPCHETE_CATALOG), "--bands", "B02,B03,B04,B08", "--cloud-model", str(fake),
               "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "clouds.onnx is not a valid ONNX model" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.dask
@pytest.mark.slow
def test_a_vanished_dask_scheduler_leaves_a_failed_manifest_not_a_running_one(tmp_path: Path):
    if not MAPCHETE_CATALOG.exists():
        pytest.skip("real Sentinel-2 test data not found")
    port = _closed_port()
    res = _cli("preprocess", "--aoi", INSIDE_TWM_WKT, "--start", "2023-08-13", "--end", "2023-08-13",
               "--catalog", str(MAPCHETE_CATALOG), "--bands", "B04", "--out", str(tmp_path), "--run-id", "d",
               "--scheduler", f"tcp://127.0.0.1:{port}")
    assert res.returncode == 2 and "Cannot reach the Dask scheduler" in res.stderr
    doc = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert doc["status"] == "failed" and "Cannot reach the Dask scheduler" in doc["error"]


def _closed_port() -> int:
    from tests.servers import free_port

    return free_port()  # nothing listens there once the probe socket is closed


def test_valid_ids_are_plain_folder_names():
    assert valid_id("20230813_S2B_R122") and valid_id("run-1.a")
    for bad in ("", "..", "a/b", "../x", ".hidden", "a\nb", "a" * 129, "a..b"):
        assert not valid_id(bad), bad
    assert os.sep not in "20230813_S2B_R122"
