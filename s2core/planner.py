"""s2core.planner: group scenes into acquisitions and pick the fewest tiles that cover the AOI.

Coverage is measured in square metres in an equal-area projection centred on the AOI
(never in squared degrees), so it is right at any latitude and across the antimeridian.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from collections import defaultdict
from typing import Optional

import shapely
from shapely.geometry.base import BaseGeometry

from s2core.errors import InvalidParameter, PolicyViolation
from s2core.model.aoi import AOI
from s2core.model.request import PreprocessRequest
from s2core.model.scene import Acquisition, Scene, SkippedDate
from s2core.search.catalog import Catalog, open_catalog
from s2core.search.safe import SafeCatalog
from s2core.settings import get_settings

log = logging.getLogger(__name__)

#: A tile must add at least this fraction of the AOI to be worth reading.
MIN_GAIN = 1e-4
#: Two items of one tile whose footprints overlap this much are duplicates (reprocessings).
DUPLICATE_IOU = 0.98


def acquisition_key(scene: Scene) -> tuple[str, str, str]:
    """Scenes of one pass share platform, UTC day and relative orbit (or datatake).

    The key becomes the acquisition id, a folder name: catalog metadata enters it only as letters,
    digits, ``_`` and ``-`` (a hostile ``platform`` such as ``x/../../pwned`` cannot leave the run folder).
    """
    orbit = f"R{scene.relative_orbit:03d}" if scene.relative_orbit is not None else (scene.datatake or "Rnone")
    return (scene.datetime.strftime("%Y%m%d"), _id_part(scene.platform), _id_part(orbit))


def _id_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "", str(text))[:64] or "x"


def group_acquisitions(scenes: list[Scene]) -> dict[tuple[str, str, str], list[Scene]]:
    """Group scenes by :func:`acquisition_key`, sorted by key."""
    groups: dict[tuple[str, str, str], list[Scene]] = defaultdict(list)
    for s in scenes:
        groups[acquisition_key(s)].append(s)
    return dict(sorted(groups.items()))


def _newest_first(s: Scene) -> tuple[float, str]:
    return (s.baseline or 0.0, s.generation_time or "")


def _dedupe_tile(scenes: list[Scene], projected: dict[str, BaseGeometry]) -> list[Scene]:
    """Keep split products of one tile (different footprints); drop reprocessed duplicates."""
    kept: list[tuple[Scene, BaseGeometry]] = []
    for s in sorted(scenes, key=_newest_first, reverse=True):
        geom = projected[s.id]
        dup = False
        for _, g in kept:
            inter = geom.intersection(g).area
            union = geom.union(g).area
            if union > 0 and inter / union >= DUPLICATE_IOU:
                dup = True
                break
        if dup:
            log.info("dropping %s: duplicate of a newer item of tile %s", s.id, s.tile)
            continue
        kept.append((s, geom))
    return [s for s, _ in kept]


def greedy_cover(cover: dict[str, BaseGeometry], total: float) -> tuple[list[str], float]:
    """The fewest tiles whose ``cover`` (each tile's part of the AOI, equal-area m²) covers the AOI of area
    ``total``, chosen greedily by added area (ties by tile name); returns (tiles, covered fraction)."""
    chosen: list[str] = []
    covered: BaseGeometry = shapely.Polygon()
    while True:
        best, best_gain = None, MIN_GAIN * total
        for tile, geom in sorted(cover.items()):
            if tile in chosen:
                continue
            gain = geom.difference(covered).area
            if gain > best_gain:
                best, best_gain = tile, gain
        if best is None:
            break
        chosen.append(best)
        covered = covered.union(cover[best])
        if covered.area >= total * (1 - 1e-9):
            break
    return chosen, (covered.area / total if total else 0.0)


def select_acquisitions(
    scenes: list[Scene],
    aoi: AOI,
    min_tile_cover: float = 0.99,
    max_tiles_per_time: Optional[int] = None,
) -> tuple[list[Acquisition], list[SkippedDate]]:
    """Pick, for every pass, the fewest tiles that cover the AOI (greedy set cover).

    A pass is kept when its chosen tiles cover at least ``min_tile_cover`` of the AOI and
    need no more than ``max_tiles_per_time`` tiles; otherwise it is returned as a
    :class:`SkippedDate` with the reason. All items of a chosen tile are kept (split
    products of one pass), duplicates of the same product are not.
    """
    target = aoi.projected
    total = target.area
    kept: list[Acquisition] = []
    skipped: list[SkippedDate] = []
    for (day, platform, orbit), group in group_acquisitions(scenes).items():
        acq_id = f"{day}_{platform}_{orbit}"
        date_s = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        by_tile: dict[str, list[Scene]] = defaultdict(list)
        for s in group:
            by_tile[s.tile].append(s)
        projected = {s.id: aoi.to_equal_area(s.footprint) for s in group}  # once per scene
        tiles = {t: _dedupe_tile(ss, projected) for t, ss in by_tile.items()}
        cover = {
            t: shapely.union_all([projected[s.id] for s in ss]).intersection(target)
            for t, ss in tiles.items()
        }
        chosen, coverage = greedy_cover(cover, total)
        ids = tuple(s.id for s in group)
        if max_tiles_per_time is not None and len(chosen) > max_tiles_per_time:
            capped = chosen[:max_tiles_per_time]
            capped_cov = shapely.union_all([cover[t] for t in capped]).area / total
            if capped_cov + 1e-9 < min_tile_cover:
                skipped.append(SkippedDate(
                    date_s, acq_id,
                    f"needs {len(chosen)} tiles ({', '.join(chosen)}) to cover the AOI but max_tiles_per_time="
                    f"{max_tiles_per_time}; {max_tiles_per_time} tile(s) cover {capped_cov:.1%}, below "
                    f"min_tile_cover={min_tile_cover:g}",
                    capped_cov, ids,
                ))
                continue
            chosen, coverage = capped, capped_cov
        if coverage + 1e-9 < min_tile_cover:
            skipped.append(SkippedDate(
                date_s, acq_id,
                f"its tiles ({', '.join(sorted(tiles))}) cover {coverage:.1%} of the AOI, below "
                f"min_tile_cover={min_tile_cover:g}",
                coverage, ids,
            ))
            continue
        chosen_scenes = tuple(s for t in chosen for s in tiles[t])
        kept.append(Acquisition(
            id=acq_id,
            datetime=min(s.datetime for s in chosen_scenes),
            platform=platform,
            relative_orbit=chosen_scenes[0].relative_orbit,
            scenes=chosen_scenes,
            coverage=min(coverage, 1.0),
        ))
    return kept, skipped


def open_request_catalog(request: PreprocessRequest) -> Catalog:
    """The catalog a request names: its SAFE ``input`` products, else ``catalog`` (signing with ``pc_key``)."""
    policy = get_settings().access_policy(request.restricted)
    if request.input:
        for path in request.input:
            if not policy.path_allowed(path):
                raise PolicyViolation(f"This server reads SAFE products only under S2_CATALOG_ROOTS: {Path(path).name} "
                                      "is elsewhere.")
        safe = SafeCatalog(request.input)
        if safe.level != request.level:
            raise InvalidParameter(
                f"The input products are {safe.level} but the request says level={request.level!r}: "
                f"set level='{safe.level}' (s2core.run.safe_runs and the CLI's --input do this themselves)."
            )
        return safe
    policy.check_catalog(request.catalog)
    key = request.pc_key.get_secret_value() if request.pc_key else None
    return open_catalog(request.catalog, collection=request.collection, pc_key=key,
                        timeout=min(30.0, request.search_timeout), deadline=request.search_timeout, policy=policy)


def plan(request: PreprocessRequest, catalog: Optional[Catalog] = None) -> tuple[list[Acquisition], list[SkippedDate], int]:
    """Search the catalog and select acquisitions, without reading pixels.

    Returns (acquisitions to process, skipped dates with reasons, number of items found).
    """
    catalog = catalog or open_request_catalog(request)
    scenes = catalog.search(request.aoi, request.start, request.end, request.max_cloud_cover)
    acquisitions, skipped = select_acquisitions(
        scenes, request.aoi, request.min_tile_cover, request.max_tiles_per_time
    )
    policy = get_settings().access_policy(request.restricted)
    for acq in acquisitions:  # before any read: an item cannot make a restricted run read elsewhere
        for scene in acq.scenes:
            for band in (*request.bands, *scene.mask_layers):
                if band in scene.hrefs:
                    policy.check_href(scene.hrefs[band], scene.id)
    return acquisitions, skipped, len(scenes)
