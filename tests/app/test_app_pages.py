"""The Streamlit pages with Streamlit's AppTest: widgets, validation messages, a real run, compare, export."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import MAPCHETE_CATALOG, ROOT, SHARED, STRADDLE_WKT, needs_shared
from tests.servers import FaultServer, free_port

BOWTIE = "POLYGON((15.9 45.9, 16.1 46.1, 16.1 45.9, 15.9 46.1, 15.9 45.9))"


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("S2_RUNS_DIR", str(root))
    monkeypatch.setenv("S2_CATALOG_ROOTS", str(SHARED))  # the app reads local catalogs only under these
    return root


def _page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / name), default_timeout=120)


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _fill_run_page(at: AppTest, *, aoi: str | None = STRADDLE_WKT, start: str = "2023-08-10",
                   end: str = "2023-08-20", catalog_kind: str = "Local catalog",
                   catalog: str = str(MAPCHETE_CATALOG)) -> AppTest:
    at.radio(key="aoi_source").set_value("Paste WKT or GeoJSON").run()
    if aoi is not None:
        at.text_area(key="aoi_text").input(aoi)
    at.date_input(key="start").set_value(dt.date.fromisoformat(start))
    at.date_input(key="end").set_value(dt.date.fromisoformat(end))
    at.selectbox(key="catalog_kind").set_value(catalog_kind).run()
    if catalog_kind == "Local catalog":
        at.text_input(key="catalog_path").input(catalog)
    elif catalog_kind == "STAC API URL":
        at.text_input(key="catalog_url").input(catalog)
    at.selectbox(key="band_preset").set_value("custom").run()
    at.multiselect(key="bands").set_value(["B02", "B03", "B04", "B08"])
    at.number_input(key="resolution").set_value(120.0)
    return at.run()


def _no_job_started(at: AppTest) -> None:
    assert "job_token" not in at.session_state
    assert at.button(key="run").disabled


# --------------------------------------------------------------------------- home


def test_home_lists_runs_and_names_an_unreachable_tile_server(app_env: Path, monkeypatch: pytest.MonkeyPatch):
    (app_env / "run-42").mkdir()
    (app_env / "run-42" / "manifest.json").write_text(
        '{"run_id": "run-42", "status": "completed", "created": "2026-02-01T00:00:00Z", '
        '"acquisitions": [{"id": "a", "status": "completed"}]}')
    at = _page("app.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == ["run-42"] and "completed" in table["status"][0]
    assert not at.warning  # the tile server is the app's own (mounted under /tiles): nothing to start
    # a separate tile server that does not answer is named, never silently replaced
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("S2_TILES_URL", url)
    at = _page("app.py").run()
    assert any(f"S2_TILES_URL={url} does not answer" in w.value for w in at.warning), [w.value for w in at.warning]


def test_home_without_runs_says_how_to_start(app_env: Path):
    at = _page("app.py").run()
    assert any("No run yet" in i.value for i in at.info)


@pytest.mark.parametrize("page", ["app.py", "pages/views/run.py", "pages/views/compare.py", "pages/views/export.py"])
def test_an_unusable_setting_is_explained_on_every_page(app_env: Path, monkeypatch: pytest.MonkeyPatch, page: str):
    monkeypatch.setenv("S2_CONFIRM_PIXELS", "many")
    at = _page(page).run()
    assert not at.exception, at.exception
    assert any("S2_CONFIRM_PIXELS='many'" in e and "unset it" in e for e in _errors(at)), _errors(at)


# --------------------------------------------------------------------------- run page: bad input


@needs_shared
def test_search_without_aoi_says_to_draw_one(app_env: Path):
    at = _fill_run_page(_page("pages/views/run.py").run(), aoi=None)
    at.button(key="search").click().run()
    assert any("No area of interest yet" in e for e in _errors(at)), _errors(at)
    _no_job_started(at)


@needs_shared
def test_invalid_polygon_is_explained(app_env: Path):
    at = _fill_run_page(_page("pages/views/run.py").run(), aoi=BOWTIE)
    assert any("self-intersect" in e.lower() or "invalid" in e.lower() for e in _errors(at)), _errors(at)
    at.button(key="search").click().run()
    assert any("not valid" in e for e in _errors(at)), _errors(at)
    _no_job_started(at)


def test_garbage_point_and_huge_aois_are_explained(app_env: Path):
    at = _page("pages/views/run.py").run()
    at.radio(key="aoi_source").set_value("Paste WKT or GeoJSON").run()
    for text, fragment in (("hello", "neither an existing vector file"),
                           ('{"type": "Point", "coordinates": [16, 46]}', "not an area"),
                           ("POLYGON((0 0, 60 0, 60 60, 0 60, 0 0))", "km²")):
        at.text_area(key="aoi_text").input(text).run()
        assert any(fragment in e for e in _errors(at)), (text, _errors(at))
        assert not at.success


@needs_shared
def test_end_before_start_is_explained(app_env: Path):
    at = _fill_run_page(_page("pages/views/run.py").run(), start="2023-08-20", end="2023-08-10")
    at.button(key="search").click().run()
    assert any("before the start date" in e for e in _errors(at)), _errors(at)
    _no_job_started(at)


def test_an_internal_service_as_stac_url_is_refused_without_contacting_it(app_env: Path, tmp_path: Path):
    (tmp_path / "admin").write_text('{"secret": "internal"}')
    with FaultServer(tmp_path) as internal:
        at = _fill_run_page(_page("pages/views/run.py").run(), catalog_kind="STAC API URL",
                            catalog=f"{internal.url}/ok/admin")
        at.button(key="search").click().run()
        assert internal.seen("ok") == 0, "the app contacted the internal service"
    errors = _errors(at)
    assert errors and "does not search STAC APIs at '127.0.0.1'" in errors[0] and "secret" not in errors[0], errors
    _no_job_started(at)


@pytest.mark.parametrize("path", ["/", "/etc"])
def test_a_local_catalog_outside_the_allowed_roots_is_refused(app_env: Path, path: str):
    at = _fill_run_page(_page("pages/views/run.py").run(), catalog=path)
    at.button(key="search").click().run()
    errors = _errors(at)
    assert errors and "reads local catalogs only under" in errors[0], errors
    _no_job_started(at)


def test_unreachable_stac_url_is_explained(app_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("S2_ALLOWED_STAC_HOSTS", "127.0.0.1")  # an administrator allowed this host
    at = _fill_run_page(_page("pages/views/run.py").run(), catalog_kind="STAC API URL",
                        catalog=f"http://127.0.0.1:{free_port()}/stac")
    at.button(key="search").click().run()
    errors = _errors(at)
    assert errors and "127.0.0.1" in errors[0] and "Traceback" not in errors[0], errors
    _no_job_started(at)


@needs_shared
def test_empty_search_is_explained(app_env: Path):
    at = _fill_run_page(_page("pages/views/run.py").run(), start="2019-01-01", end="2019-01-31")
    at.button(key="search").click().run()
    assert any("No Sentinel-2" in e or "no item" in e.lower() for e in _errors(at)), _errors(at)
    _no_job_started(at)


def test_bad_dask_scheduler_is_explained(app_env: Path):
    at = _page("pages/views/run.py").run()
    at.text_input(key="scheduler").input("lokal").run()
    assert any("not understood" in e for e in _errors(at)), _errors(at)


@needs_shared
def test_snap_options_are_validated_before_anything_runs(app_env: Path):
    """Output format, CRS and cloud-to-NoData without models: each bad value is explained at search."""
    cases = [
        ({"output_format": "SAGA"}, "SAGA"),
        ({"crs": "EPSG:999999"}, "is not a CRS"),
    ]
    for widgets, message in cases:
        at = _fill_run_page(_page("pages/views/run.py").run())
        for key, value in widgets.items():
            at.text_input(key=key).input(value).run()
        at.button(key="search").click().run()
        assert any(message in e for e in _errors(at)), (widgets, _errors(at))
        _no_job_started(at)
    at = _fill_run_page(_page("pages/views/run.py").run())
    at.checkbox(key="use_masks").uncheck().run()
    at.selectbox(key="cloud_nodata").select("merged").run()
    at.button(key="search").click().run()
    assert any("needs the cloud/shadow models" in e for e in _errors(at)), _errors(at)
    # valid options pass and search goes on
    at = _fill_run_page(_page("pages/views/run.py").run())
    at.selectbox(key="downsampling").select("median").run()
    at.selectbox(key="land_sea_mask").select("sea").run()
    at.text_input(key="crs").input("EPSG:3035").run()
    at.text_input(key="output_format").input("envi").run()
    at.button(key="search").click().run()
    assert not _errors(at), _errors(at)
    assert len(at.dataframe[0].value) == 5


@needs_shared
def test_a_large_run_needs_a_confirmation(app_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("S2_CONFIRM_PIXELS", "1000")
    at = _fill_run_page(_page("pages/views/run.py").run())
    at.button(key="search").click().run()
    assert any("This run is large" in w.value for w in at.warning)
    assert at.button(key="run").disabled
    at.checkbox(key="confirm_size").check().run()
    assert not at.button(key="run").disabled
    _ = at  # not started: the confirmation alone does not run it
    assert "job_token" not in at.session_state


def test_planetary_computer_key_is_a_password_field(app_env: Path):
    at = _page("pages/views/run.py").run()
    key_box = at.text_input(key="pc_key")
    assert key_box.proto.type == key_box.proto.PASSWORD


# --------------------------------------------------------------------------- run page: a real run


@needs_shared
def test_search_then_run_in_the_background(app_env: Path):
    from pages.ui.context import job_manager

    at = _fill_run_page(_page("pages/views/run.py").run())
    assert at.button(key="run").disabled  # no search yet
    at.button(key="search").click().run()
    assert not _errors(at), _errors(at)
    table = at.dataframe[0].value
    assert len(table) == 5 and set(table["tiles"]) == {"33TWL + 33TWM"}
    assert any(re.search(r"Output grid [\d,]+ × [\d,]+ px, 5 acquisition\(s\)", c.value) for c in at.caption)
    # 120 m through the 30 m U-Net: said before anything runs
    assert any("outside the scale it was trained for" in w.value for w in at.warning)
    at.button(key="run").click().run()
    job = job_manager().owned(at.session_state["job_token"])
    assert job is not None and at.query_params["job"] in (job.token, [job.token])  # a reload keeps the job
    snap = job.wait(timeout=300)
    assert snap.status == "completed", snap.error
    assert set(snap.acquisitions.values()) == {"completed"} and len(snap.acquisitions) == 5
    assert (app_env / snap.run_id / "manifest.json").exists()
    owner = json.loads((app_env / snap.run_id / "manifest.json").read_text())["parameters"]["owner"]
    assert re.fullmatch(r"session-[0-9a-f]{6}", owner)  # no proxy names a user here: the session's label
    at.run()
    assert any("Done" in s.value for s in at.success)
    ranked = at.dataframe[-1].value  # the dates by clear share of the AOI, the clearest marked
    assert list(ranked["clear % of AOI"]) == sorted(ranked["clear % of AOI"], reverse=True)
    assert ranked["clearest"].iloc[0] == "★" and len(ranked) == 5
    # 120 m tiles through a 30 m U-Net: the page says the masks are outside the model's scale
    assert any("outside the scale it was trained for" in w.value for w in at.warning)
    # another user (a new session without the job's URL) sees neither the job nor a Cancel button
    other = _page("pages/views/run.py").run()
    assert not any(b.key and b.key.startswith("cancel-") for b in other.button)
    assert not any("Done" in s.value for s in other.success)
    # changing a parameter invalidates the search
    at.number_input(key="dilation_m").set_value(100.0).run()
    assert any("search again" in i.value for i in at.info) and at.button(key="run").disabled


# --------------------------------------------------------------------------- compare and export


@pytest.fixture
def served_root(masked_runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("S2_RUNS_DIR", str(masked_runs_root))
    return masked_runs_root


@needs_shared
def test_compare_shows_agreement_and_chart(served_root: Path):
    at = _page("pages/views/compare.py").run()
    assert not at.exception and not _errors(at), _errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Overall agreement"].endswith("%")
    assert 0 <= float(metrics["Cloud IoU"]) <= 1
    percentages = at.dataframe[0].value
    # five classes, each shown rounded to 0.01 %: their sum is 100 within 5 x 0.005
    assert abs(percentages["model %"].sum() - 100) <= 0.025 and abs(percentages["product %"].sum() - 100) <= 0.025
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1 and '"type": "line"' in charts[0].proto.spec
    per_date = at.dataframe[-1].value
    assert len(per_date) == 5 and per_date["model cloud %"].max() > 20 * per_date["model cloud %"].min()
    at.selectbox(key="cmp_left").set_value("Cloud probability").run()
    assert not at.exception and not _errors(at)


@needs_shared
def test_export_lists_files_and_zips_the_run(served_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copytree(served_root / "wide", tmp_path / "runs" / "wide")
    monkeypatch.setenv("S2_RUNS_DIR", str(tmp_path / "runs"))
    at = _page("pages/views/export.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "manifest.json" in list(table["file"]) and (table["kind"] == "geotiff").sum() == 5 * 7
    at.button(key="zip").click().run()
    z = tmp_path / "runs" / "wide.zip"
    assert z.exists()
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
    assert "wide/manifest.json" in names and sum(n.endswith(".tif") for n in names) == 35
    labels = [b.proto.label for b in at.get("download_button")]
    assert any(lb.startswith("Download wide.zip") for lb in labels), labels
    assert any(lb.startswith("manifest.json") for lb in labels)
