"""SNAP's downsampling and flag methods on hand-made arrays with known answers, and on real bands."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from s2core.errors import InvalidParameter
from s2core.read.resampling import check_method, downsample, downsample_flags
from tests.conftest import RKH, needs_shared

# 4 x 4 uint16, nodata 0; blocks of 2 x 2:
#  [ 0  5 | 7  8 ]      block A: 0 5 / 3 4  -> valid 5 3 4
#  [ 3  4 | 9  1 ]      block B: 7 8 / 9 1
#  [ 0  0 | 2  2 ]      block C: all nodata
#  [ 0  0 | 2  6 ]      block D: 2 2 / 2 6
A = np.array([[0, 5, 7, 8], [3, 4, 9, 1], [0, 0, 2, 2], [0, 0, 2, 6]], dtype=np.uint16)


@pytest.mark.parametrize("method, expected", [
    ("first", [[5, 7], [0, 2]]),      # first valid in row order: the top-left 0 is nodata -> 5
    ("min", [[3, 1], [0, 2]]),
    ("max", [[5, 9], [0, 6]]),
    ("mean", [[4, 6], [0, 3]]),       # (5+3+4)/3 = 4; (7+8+9+1)/4 = 6.25 -> 6; (2+2+2+6)/4 = 3
    ("median", [[4, 8], [0, 2]]),     # median(3,4,5) = 4; median(1,7,8,9) = 7.5 -> 8; median(2,2,2,6) = 2
])
def test_downsampling_methods_skip_nodata(method: str, expected: list[list[int]]):
    out = downsample(A, 2, method, nodata=0)
    assert out.dtype == np.uint16
    assert out.tolist() == expected


def test_first_is_not_gdal_nearest_and_float_rasters_keep_fractions():
    b = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    assert downsample(b, 2, "first", nodata=None).tolist() == [[1, 3], [9, 11]]  # top-left, not centre
    assert downsample(b, 2, "mean", nodata=None).tolist() == [[3.5, 5.5], [11.5, 13.5]]
    nan = b.copy()
    nan[0, 0] = np.nan
    assert downsample(nan, 2, "mean", nodata=np.nan)[0, 0] == pytest.approx((2 + 5 + 6) / 3)


def test_partial_edge_blocks_use_the_pixels_they_have_and_bands_are_independent():
    c = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.int16)
    assert downsample(c, 2, "max", nodata=0).tolist() == [[5, 6], [8, 9]]
    stack = np.stack([A, A * 2])
    assert np.array_equal(downsample(stack, 2, "max")[1], downsample(A * 2, 2, "max"))


# flags: bit 0 = 1, bit 1 = 2, bit 2 = 4; nodata 0 (no flag set means "valid, nothing flagged" is 128 here)
F = np.array([[1 | 128, 3 | 128, 0, 0],
              [1 | 128, 5 | 128, 0, 4 | 128]], dtype=np.uint8)


@pytest.mark.parametrize("method, expected", [
    ("first", [[1 | 128, 4 | 128]]),
    ("flag_and", [[1 | 128, 4 | 128]]),                 # bit 0 in all four; the right block has one valid px
    ("flag_or", [[1 | 2 | 4 | 128, 4 | 128]]),
    ("flag_median_and", [[1 | 128, 4 | 128]]),          # bits 1 and 2 in 1 of 4: not more than half
    ("flag_median_or", [[1 | 128, 4 | 128]]),
])
def test_flag_methods(method: str, expected: list[list[int]]):
    assert downsample_flags(F, 2, method, nodata=0).tolist() == expected


def test_flag_median_and_vs_or_differ_at_exactly_half():
    g = np.array([[1, 3], [3, 1]], dtype=np.uint8)  # bit 1 in exactly 2 of 4
    assert downsample_flags(g, 2, "flag_median_and", nodata=None).tolist() == [[1]]
    assert downsample_flags(g, 2, "flag_median_or", nodata=None).tolist() == [[3]]


def test_unknown_names_and_bad_factors_are_explained():
    with pytest.raises(InvalidParameter, match="choose one of first, min, max, mean, median"):
        check_method("downsampling", "average")
    with pytest.raises(InvalidParameter, match="flag_median_or"):
        downsample_flags(F, 2, "majority")
    with pytest.raises(InvalidParameter, match="whole factor"):
        downsample(A, 1.5, "mean")
    with pytest.raises(InvalidParameter, match="integer raster"):
        downsample_flags(A.astype(np.float32), 2, "flag_or")
    assert check_method("upsampling", "cubic") == "bicubic"


@needs_shared
def test_real_20m_band_to_60m_mean_and_first():
    with rasterio.open(RKH / "B11.tif") as ds:  # 20 m band, stored at 200 m (549 x 549)
        band = ds.read(1)
    out = downsample(band, 3, "mean", nodata=0)
    assert out.shape == (183, 183)
    rng = np.random.default_rng(0)
    for r, c in rng.integers(0, 182, size=(200, 2)):
        block = band[3 * r:3 * r + 3, 3 * c:3 * c + 3].astype(np.float64)
        valid = block[block != 0]
        expected = np.rint(valid.mean()) if valid.size else 0
        assert out[r, c] == expected
    first = downsample(band, 3, "first", nodata=0)
    ok = band[::3, ::3] != 0
    assert np.array_equal(first[ok], band[::3, ::3][ok])
    scl = rasterio.open(RKH / "SCL.tif").read(1)
    classes = downsample_flags(scl, 3, "first", nodata=0)
    assert set(np.unique(classes)) <= set(np.unique(scl))


@needs_shared
@pytest.mark.parametrize("method", ["first", "min", "max", "mean", "median"])
def test_reading_onto_an_aligned_coarser_grid_aggregates_native_blocks(method: str):
    from affine import Affine

    from s2core.model.grid import Grid
    from s2core.read.reader import read_to_grid

    with rasterio.open(RKH / "B11.tif") as ds:
        native = ds.read(1).astype(np.float32)
        t, crs = ds.transform, ds.crs.to_string()
    # a 600 m grid whose origin is 10 native pixels in: every grid pixel is 3 x 3 native pixels
    grid = Grid(crs, Affine(600.0, 0, t.c + 10 * t.a, 0, -600.0, t.f + 10 * t.e), 100, 90)
    got = read_to_grid(str(RKH / "B11.tif"), grid, downsampling=method)
    window = native[10:10 + 270, 10:10 + 300]
    window[window == 0] = np.nan
    expected = downsample(window, 3, method, nodata=np.nan)
    assert got.shape == (90, 100)
    assert np.array_equal(got, expected, equal_nan=True)


@needs_shared
def test_flag_downsampling_of_scl_and_gdal_fallback_off_grid():
    from affine import Affine

    from s2core.model.grid import Grid
    from s2core.read.reader import read_to_grid

    with rasterio.open(RKH / "SCL.tif") as ds:
        scl, t, crs = ds.read(1), ds.transform, ds.crs.to_string()
    grid = Grid(crs, Affine(3 * t.a, 0, t.c, 0, -3 * t.a, t.f), 150, 150)
    for method in ("first", "flag_or", "flag_median_and"):
        got = read_to_grid(str(RKH / "SCL.tif"), grid, is_class=True, flag_downsampling=method)
        assert np.array_equal(got, downsample_flags(scl[:450, :450], 3, method, nodata=0)), method
    # half a native pixel off: grids do not line up, GDAL's nearest/average kernels are used instead
    shifted = Grid(crs, Affine(3 * t.a, 0, t.c + t.a / 2, 0, -3 * t.a, t.f), 150, 150)
    mean = read_to_grid(str(RKH / "B11.tif"), shifted, downsampling="mean")
    aligned = read_to_grid(str(RKH / "B11.tif"), grid, downsampling="mean")
    assert np.nanmean(mean) == pytest.approx(float(np.nanmean(aligned)), rel=0.01)


def test_cli_passes_resampling_options():
    from s2core.cli import _request_from_args, build_parser

    args = build_parser().parse_args(["preprocess", "--aoi", "POLYGON((16 46,16.01 46,16.01 46.01,16 46.01,16 46))",
                                      "--start", "2023-08-10", "--end", "2023-08-20", "--downsampling", "median",
                                      "--flag-downsampling", "flag_or", "--upsampling", "bicubic"])
    req = _request_from_args(args)
    assert (req.upsampling, req.downsampling, req.flag_downsampling) == ("bicubic", "median", "flag_or")


def _gdal_upsampled(arr: np.ndarray, factor: int, method: str, box: tuple[int, int, int, int],
                    dtype: type) -> np.ndarray:
    """GDAL's resampled RasterIO of ``box`` over the same array (what :func:`upsample` replaces)."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from s2core.read.gdal_mem import open_array

    row, col, h, w = box
    with open_array(np.ascontiguousarray(arr)) as mem:
        return mem.read(1, window=Window(col, row, w, h), out_shape=(h * factor, w * factor),
                        resampling=Resampling[method], out_dtype=dtype)


@needs_shared
@pytest.mark.parametrize("factor", [2, 3, 6])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_upsample_gives_gdal_values_wherever_the_box_lies(factor: int, dtype: type, method: str):
    """Real B05 pixels upsampled by whole factors: GDAL's resampled RasterIO values (±1 DN of
    rounding, exact for nearest), inside the array and at its edges (replicated), and the same values
    for a box whatever array around it holds its neighbours."""
    from s2core.read.resampling import upsample

    with rasterio.open(RKH / "B05.tif") as src:
        arr = src.read(1, window=rasterio.windows.Window(100, 200, 300, 260))
    assert arr.std() > 100  # real texture, not a flat field
    for box in [(0, 0, 64, 64), (40, 37, 64, 101), (196, 236, 64, 64), (0, 0, 260, 300)]:
        got = upsample(arr, factor, method, box, dtype)
        assert got.dtype == dtype and got.shape == (box[2] * factor, box[3] * factor)
        ref = _gdal_upsampled(arr, factor, method, box, dtype)
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        if method == "nearest":
            assert diff.max() == 0, box
        else:
            assert diff.max() <= 1, box  # GDAL rounds an integer array's values for a float32 output too
    # the box (40, 37, 64, 101) cut out with its one-pixel neighbourhood: the very same values
    inner = upsample(arr[39:39 + 66, 36:36 + 103], factor, method, (1, 1, 64, 101), dtype)
    np.testing.assert_array_equal(inner, upsample(arr, factor, method, (40, 37, 64, 101), dtype))
    assert upsample(arr, factor, "bicubic", (0, 0, 8, 8), dtype) is None  # GDAL's: not computed here
