"""Tile selection (grouping, coverage in metres, greedy cover, limits) and the baseline offset."""

from __future__ import annotations

import copy
import datetime as dt
import json

import numpy as np
import pytest

from s2core import parse_aoi
from s2core.search.catalog import open_catalog
from s2core.search.normalize import scene_from_item
from s2core.model.radiometry import dn_offset, processing_baseline, to_reflectance_dn
from s2core.planner import group_acquisitions, select_acquisitions
from tests.conftest import INSIDE_TWM_WKT, MAPCHETE_CATALOG, PC_ITEMS, STRADDLE_WKT, mapchete_items, needs_shared

pytestmark = needs_shared

AUG = (dt.date(2023, 8, 1), dt.date(2023, 8, 31))


def _scenes(wkt):
    aoi = parse_aoi(wkt)
    return aoi, open_catalog(str(MAPCHETE_CATALOG)).search(aoi, *AUG)


def test_straddling_aoi_needs_both_tiles():
    aoi, scenes = _scenes(STRADDLE_WKT)
    acqs, skipped = select_acquisitions(scenes, aoi)
    assert [a.date.isoformat() for a in acqs] == ["2023-08-10", "2023-08-13", "2023-08-15", "2023-08-18", "2023-08-20"]
    assert not skipped
    for a in acqs:
        assert sorted(a.tiles) == ["33TWL", "33TWM"]
        assert a.coverage == pytest.approx(1.0, abs=1e-6)


def test_aoi_inside_one_tile_uses_one_tile():
    aoi, scenes = _scenes(INSIDE_TWM_WKT)
    acqs, _ = select_acquisitions(scenes, aoi)
    assert len(acqs) == 5
    assert all(a.tiles == ["33TWM"] and len(a.scenes) == 1 for a in acqs)


def test_max_tiles_per_time_and_min_tile_cover_change_the_selection():
    aoi, scenes = _scenes(STRADDLE_WKT)
    acqs, skipped = select_acquisitions(scenes, aoi, min_tile_cover=0.99, max_tiles_per_time=1)
    assert acqs == [] and len(skipped) == 5
    assert "max_tiles_per_time=1" in skipped[0].reason and "min_tile_cover=0.99" in skipped[0].reason
    one_tile = skipped[0].coverage
    assert 0.3 < one_tile < 0.9
    # accepting the coverage one tile reaches keeps every date with one tile
    acqs, skipped = select_acquisitions(scenes, aoi, min_tile_cover=one_tile - 0.01, max_tiles_per_time=1)
    assert len(acqs) == 5 and not skipped and all(len(a.tiles) == 1 for a in acqs)


def test_partial_coverage_is_reported_with_reason():
    # AOI reaching west of 15°E where no tile has data; orbit R079 has no data here at all
    aoi, scenes = _scenes("POLYGON((14.9 46.3, 15.1 46.3, 15.1 46.4, 14.9 46.4, 14.9 46.3))")
    acqs, skipped = select_acquisitions(scenes, aoi, min_tile_cover=0.99)
    assert not acqs and [s.date for s in skipped] == ["2023-08-13", "2023-08-18"]
    assert all("below min_tile_cover=0.99" in s.reason for s in skipped)
    assert all(0.45 < s.coverage < 0.55 for s in skipped)  # 15.0–15.1 of 14.9–15.1
    acqs, _ = select_acquisitions(scenes, aoi, min_tile_cover=0.4)
    assert len(acqs) == 2


def test_grouping_of_planetary_computer_items_across_utm_zones():
    raw = json.loads(PC_ITEMS.read_text())["features"]
    scenes = [scene_from_item(f) for f in raw]
    groups = group_acquisitions(scenes)
    assert len(groups) == 1  # one datatake, tiles in UTM zones 58, 59 and 60
    (key, members), = groups.items()
    assert key == ("20190101", "S2A", "R116") and len(members) == len(raw)
    assert {s.tile[:2] for s in members} == {"58", "59", "60"}
    # an AOI across the 59/60 zone boundary (174°E) is covered by tiles of both zones
    # an AOI across the 58/59 zone boundary (168°E) needs tiles of both zones
    aoi = parse_aoi("POLYGON((167.0 54.3, 169.4 54.3, 169.4 54.6, 167.0 54.6, 167.0 54.3))")
    inside = [s for s in scenes if s.footprint.intersects(aoi.geometry)]
    acqs, skipped = select_acquisitions(inside, aoi, min_tile_cover=0.99)
    assert acqs, skipped
    assert {t[:2] for t in acqs[0].tiles} == {"58", "59"}
    assert acqs[0].coverage > 0.99


def test_split_products_kept_duplicates_dropped():
    item, path = mapchete_items()[0]
    base = scene_from_item(item, str(path))
    # a reprocessing of the same product (same footprint, newer baseline) is a duplicate
    newer = copy.deepcopy(item)
    newer["id"] += "-reprocessed"
    newer["properties"]["s2:processing_baseline"] = "05.10"
    # a split product: the same tile and pass, another part of the footprint
    split = copy.deepcopy(item)
    split["id"] += "-split"
    from shapely.geometry import box, mapping
    minx, miny, maxx, maxy = base.footprint.bounds
    split["geometry"] = mapping(box(minx, miny, (minx + maxx) / 2, maxy))
    first = copy.deepcopy(item)
    first["geometry"] = mapping(box((minx + maxx) / 2, miny, maxx, maxy))
    scenes = [scene_from_item(d, str(path)) for d in (first, split, newer)]
    aoi = parse_aoi(f"POLYGON(({minx+0.1} {miny+0.1}, {maxx-0.1} {miny+0.1}, {maxx-0.1} {maxy-0.1}, {minx+0.1} {maxy-0.1}, {minx+0.1} {miny+0.1}))")
    acqs, _ = select_acquisitions(scenes, aoi)
    assert len(acqs) == 1
    ids = {s.id for s in acqs[0].scenes}
    # none of the three is a duplicate of another: every item of the chosen tile is kept
    assert item["id"] + "-split" in ids and item["id"] + "-reprocessed" in ids
    # exact duplicates: the older of two identical footprints is dropped
    twins = [scene_from_item(item, str(path)), scene_from_item(newer, str(path))]
    acqs, _ = select_acquisitions(twins, aoi)
    assert [s.id for s in acqs[0].scenes] == [item["id"] + "-reprocessed"]


def test_offset_rules():
    assert processing_baseline({"s2:processing_baseline": "05.09"}) == pytest.approx(5.09)
    assert processing_baseline({"s2:product_uri": "S2A_MSIL2A_20230815T095031_N0509_R079_T33TWL_x.SAFE"}) == pytest.approx(5.09)
    asset = {"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}
    assert dn_offset({"s2:processing_baseline": "05.09"}, asset) == -1000
    assert dn_offset({"s2:processing_baseline": "05.09"}, {}) == -1000  # PC items: no raster:bands
    assert dn_offset({"s2:processing_baseline": "02.14"}, {}) == 0
    # Earth Search harmonised the pixels already: its -0.1 must not be applied twice
    assert dn_offset({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}, asset) == 0


def test_to_reflectance_never_makes_a_valid_pixel_zero():
    dn = np.array([np.nan, 500.0, 1000.0, 1001.0, 12000.0], dtype=np.float32)
    out = to_reflectance_dn(dn, -1000)
    assert out.tolist() == [0, 1, 1, 1, 11000]
