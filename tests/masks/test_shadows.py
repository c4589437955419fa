"""s2core.shadows: the corridor a cloud's shadow can fall in, on synthetic geometry and on a real product."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio

import s2core.shadows as shadows
from s2core.errors import InvalidParameter
from s2core.search.safe import read_product
from s2core.shadows import SunGeometry, cast_corridor, check_shadows
from tests.conftest import SHARED

T29UNU = SHARED / "l2a" / "stactools-T29UNU-20221005" / \
    "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
needs_t29unu = pytest.mark.skipif(not T29UNU.exists(), reason=f"the T29UNU L2A product is not at {T29UNU}")

PIXEL = 10.0
SE_SUN = dict(sun_azimuth=135.0, sun_zenith=50.0)  # the sun in the south-east, 40° above the horizon


def _offset(h: float, azimuth: float = 135.0, zenith: float = 50.0) -> tuple[int, int]:
    """Rows, columns from a cloud to its shadow for a cloud ``h`` m high (independent of the module)."""
    d = h * math.tan(math.radians(zenith)) / PIXEL
    # away from the sun: azimuth + 180°, rows grow southwards
    return (round(d * math.cos(math.radians(azimuth))), round(-d * math.sin(math.radians(azimuth))))


def _point(shape: tuple[int, int], *cells: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for r, c in cells:
        out[r, c] = True
    return out


def test_a_square_cloud_casts_to_the_north_west_under_a_south_east_sun():
    shape = (600, 600)
    cloud = np.zeros(shape, dtype=bool)
    cloud[400:420, 400:420] = True
    dr, dc = _offset(1000.0)  # a 1 km high cloud: about 84 px north and 84 px west
    assert dr < -50 and dc < -50
    shadow = np.zeros(shape, dtype=bool)
    shadow[400 + dr:420 + dr, 400 + dc:420 + dc] = True  # its true shadow
    shadow[450:460, 450:460] = True  # south-east of the cloud: towards the sun
    shadow[300:310, 450:460] = True  # north-east: beside the corridor
    shadow[500:510, 300:310] = True  # south-west
    kept = check_shadows(cloud, shadow, **SE_SUN, pixel_size=PIXEL)
    assert kept[400 + dr:420 + dr, 400 + dc:420 + dc].all()
    assert not kept[450:, 450:].any() and not kept[300:310, 450:460].any() and not kept[500:510, 300:310].any()
    assert not (kept & ~shadow).any()  # it only ever removes shadow


def test_the_height_range_is_respected():
    shape = (800, 800)
    cloud = _point(shape, (700, 700))
    corridor = cast_corridor(cloud, **SE_SUN, pixel_size=PIXEL, min_height=200.0, max_height=5000.0)
    for h, inside in ((100.0, False), (300.0, True), (2500.0, True), (4900.0, True), (6000.0, False)):
        dr, dc = _offset(h)
        assert corridor[700 + dr, 700 + dc] == inside, h
    # the corridor is a straight line of about (5000 - 200) m · tan(50°) / 10 m / √2 pixels per axis
    assert corridor.sum() == pytest.approx((5000 - 200) * math.tan(math.radians(50)) / PIXEL / math.sqrt(2), rel=0.05)


def test_sun_at_the_zenith_hides_shadows_under_their_clouds():
    cloud = np.zeros((50, 50), dtype=bool)
    cloud[20:25, 20:25] = True
    assert np.array_equal(cast_corridor(cloud, 100.0, 0.0, PIXEL), cloud)


@pytest.mark.parametrize("azimuth, zenith", [(math.nan, 40.0), (120.0, math.nan), (120.0, 90.0), (120.0, 95.0)])
def test_unknown_angles_and_a_sun_at_the_horizon_rule_nothing_out(azimuth: float, zenith: float):
    cloud = _point((40, 40), (20, 20))
    shadow = np.zeros((40, 40), dtype=bool)
    shadow[::3, ::5] = True
    assert np.array_equal(check_shadows(cloud, shadow, azimuth, zenith, PIXEL), shadow)


def test_unknown_sky_beyond_the_array_keeps_shadows_on_the_sunward_edges():
    shape = (300, 300)
    shadow = np.zeros(shape, dtype=bool)
    shadow[250:255, 250:255] = True  # near the south-east edge: a cloud beyond it could cast this
    shadow[10:15, 10:15] = True  # near the north-west edge: its cloud would be inside, and there is none
    no_cloud = np.zeros(shape, dtype=bool)
    low = dict(pixel_size=PIXEL, max_height=1000.0)  # clouds at most 1 km high: casts reach 84 px per axis
    assert not check_shadows(no_cloud, shadow, **SE_SUN, **low).any()
    kept = check_shadows(no_cloud, shadow, **SE_SUN, **low, outside=True)
    assert kept[250:255, 250:255].all() and not kept[10:15, 10:15].any()


def test_parallax_moves_the_corridor_towards_the_satellite():
    cloud = _point((400, 400), (200, 200))
    base = cast_corridor(cloud, 180.0, 45.0, PIXEL, 1000.0, 1000.0)  # one height: one point, 100 px north
    assert np.argwhere(base).tolist() == [[100, 200]]
    # the satellite in the east at 10°: the cloud appears west of where it is, so its shadow lies east of its image
    seen = cast_corridor(cloud, 180.0, 45.0, PIXEL, 1000.0, 1000.0, view_zenith=10.0, view_azimuth=90.0)
    (r, c), = np.argwhere(seen).tolist()
    assert r == 100 and c == 200 + round(1000 * math.tan(math.radians(10)) / PIXEL)


def test_large_inputs_are_swept_on_cells_and_contain_the_exact_corridor(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(7)
    cloud = rng.random((900, 900)) > 0.99996  # about 30 small clouds
    exact = cast_corridor(cloud, **SE_SUN, pixel_size=PIXEL, max_height=3000.0)
    monkeypatch.setattr(shadows, "SWEEP_BUDGET", 2_000_000)
    factor = shadows.sweep_factor(cloud.shape, 260)
    assert factor > 1
    coarse = cast_corridor(cloud, **SE_SUN, pixel_size=PIXEL, max_height=3000.0)
    assert not (exact & ~coarse).any()  # never drops a possible shadow
    assert coarse.sum() < 6 * factor * exact.sum()  # a line widens to at most 3 cells: still a corridor
    assert coarse.mean() < 0.5


def test_bad_arguments_are_named():
    with pytest.raises(InvalidParameter, match="pixel_size"):
        cast_corridor(np.zeros((4, 4), bool), 100.0, 30.0, 0.0)
    with pytest.raises(InvalidParameter, match="min_height"):
        cast_corridor(np.zeros((4, 4), bool), 100.0, 30.0, 10.0, 5000.0, 200.0)
    with pytest.raises(InvalidParameter, match="2-D"):
        cast_corridor(np.zeros((2, 4, 4), bool), 100.0, 30.0, 10.0)
    with pytest.raises(InvalidParameter, match="shape"):
        check_shadows(np.zeros((4, 4), bool), np.zeros((5, 4), bool), 100.0, 30.0, 10.0)


@needs_t29unu
def test_real_scl_shadows_lie_in_the_corridor_of_real_scl_clouds():
    """T29UNU, 2022-10-05: SCL's own shadows (class 3, 20 m) against SCL's clouds (8, 9) under the sun of
    MTD_TL.xml; the same with the sun's direction reversed pins the conventions."""
    scene = read_product(T29UNU, require_bands=False).scene()
    angles = scene.angles
    assert angles.sun_zenith == pytest.approx(57.8, abs=0.1) and angles.sun_azimuth == pytest.approx(172.8, abs=0.1)
    with rasterio.open(scene.hrefs["SCL"]) as ds:
        scl = ds.read(1)
        pixel = ds.res[0]
    cloud, shadow = np.isin(scl, (8, 9)), scl == 3
    assert shadow.sum() > 1_000_000

    def share(azimuth: float) -> float:
        kept = check_shadows(cloud, shadow, azimuth, angles.sun_zenith, pixel, view_zenith=angles.incidence_angle,
                             view_azimuth=angles.view_azimuth)
        return float(kept.sum() / shadow.sum())

    real, reversed_, crosswise = share(angles.sun_azimuth), share(angles.sun_azimuth + 180), share(angles.sun_azimuth + 90)
    assert real > 0.99, real
    assert reversed_ < 0.85 and crosswise < 0.9, (reversed_, crosswise)


def test_offsets_follow_the_documented_formula():
    g = SunGeometry(sun_azimuth=90.0, sun_zenith=45.0)  # the sun in the east: shadows to the west
    dr, dc = g.offset_per_metre()
    assert dr == pytest.approx(0.0, abs=1e-12) and dc == pytest.approx(-1.0)
    assert shadows.reach(g, 10.0, 1000.0) == (1, 1, 1, 101)  # clouds up to 100 px east of the grid count
