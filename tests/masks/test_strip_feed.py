"""The masks stage fed from the strips as they are written: the same inputs and the same outputs as reading
the raster back, whatever the strips' heights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from s2core.masks.stage import FileSource, StripFeed, block_mean, mask_acquisition, plan_models
from s2core.model.grid import Grid
from s2core.model.request import MaskOptions
from s2core.write.cog import write_cog
from tests.masks.test_models_registry import SIX, needs_rkh, rkh_six_bands


@needs_rkh
def test_strip_feed_equals_reading_the_raster_back(tmp_path: Path):
    dn = np.round(rkh_six_bands(300) * 10000).astype(np.uint16)[:, :, :280]  # 29RKH pixels as DN
    dn = np.maximum(dn, 1)
    dn[:, 250:, :40] = 0  # a corner without data
    dn[:, 10:13, 100:107] = 0  # a gap (stacking leaves a pixel with data in every band or in none)
    grid = Grid("EPSG:32629", Affine(10, 0, 200000, 0, -10, 3300000), 280, 300)
    options = MaskOptions(cloud_model=("ukis-csmask-6b-l2a",), shadow_model="ukis-csmask-6b-l2a", shadow_check="off")
    plans = plan_models(options, tuple(SIX), grid)
    assert [p.factor for p in plans] == [3]  # the U-Net's 30 m from a 10 m grid
    feed = StripFeed(plans, grid)
    for r0 in range(0, 300, 7):  # strips that are not whole blocks: rows wait for the next strip
        feed.add(r0, dn[:, r0:r0 + 7])
    mean_dn, ok = block_mean(dn, 3)
    given = feed.inputs["ukis-csmask-6b-l2a"]
    assert np.array_equal(given.mean_dn, mean_dn) and np.array_equal(given.valid, ok)
    exact = dn[:, :297, :279].reshape(6, 99, 3, 93, 3).astype(np.float64)
    full = (dn[:, :297, :279] != 0).all(axis=0).reshape(99, 3, 93, 3).all(axis=(1, 3))
    means = exact.mean(axis=(2, 4))
    assert np.abs(mean_dn[:, :99, :93][:, full].astype(np.float64) - means[:, full]).max() <= 0.5  # nearest DN
    assert np.array_equal(feed.valid, (dn != 0).all(axis=0))

    raster = write_cog(tmp_path / "raster.tif", dn, grid, nodata=0)
    product = np.ones(grid.shape, dtype=np.uint8)
    outs = {}
    for label in ("fed", "read"):
        folder = tmp_path / label
        source = FileSource(raster)
        try:
            mask_acquisition(options, source, product, tuple(SIX), grid, folder,
                             valid=feed.valid if label == "fed" else None,
                             inputs=dict(feed.inputs) if label == "fed" else None)
        finally:
            source.close()
        outs[label] = {n: rasterio.open(folder / n).read() for n in ("mask.tif", "cloud_prob.tif", "shadow_prob.tif")}
    for name in outs["fed"]:
        assert np.array_equal(outs["fed"][name], outs["read"][name]), name
    assert (outs["fed"]["cloud_prob.tif"][0][250:, :40] == 255).all()  # nodata stays nodata
