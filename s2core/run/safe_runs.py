"""s2core.run.safe_runs: preprocess local SAFE products, one product or a whole folder, as one batch.

With an AOI, every product that intersects it is a candidate and the run is the same as with a
catalog (acquisitions by date, one grid). Without one, each product is processed whole on its
own grid (its footprint, in its tile's CRS), as CloudS2Mask does; progress is one bar over all.

Example:
    >>> results = preprocess_safe(["products/"], resolution=20, out_dir="runs")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from s2core.run.batch import BatchResult, preprocess_batch
from s2core.errors import InvalidParameter
from s2core.model.aoi import parse_aoi
from s2core.progress import CancelToken, ProgressCallback
from s2core.model.request import PreprocessRequest
from s2core.run.request import make_request
from s2core.settings import get_settings
from s2core.search.safe import SafeCatalog

log = logging.getLogger(__name__)


def safe_requests(inputs: Sequence[str | Path], aoi: Any = None, **params: Any) -> list[PreprocessRequest]:
    """The requests that process ``inputs`` (products or folders of products).

    ``params`` are :class:`~s2core.model.request.PreprocessRequest` fields; ``start``/``end`` default
    to the products' dates, ``level`` is the products' level (L1C or L2A).

    Raises:
        InvalidProduct: an input is not a readable SAFE product, or the inputs mix levels.
        InvalidParameter: a parameter is wrong (as :func:`~s2core.model.request.make_request`).
    """
    for key in ("input", "level", "catalog"):
        if key in params:
            raise InvalidParameter(f"safe_requests sets {key!r} itself from the products: leave it out.")
    catalog = SafeCatalog(inputs)
    products = catalog.products
    level = catalog.level
    days = sorted(p.datetime.date() for p in products)
    if aoi is not None:
        params.setdefault("start", days[0])
        params.setdefault("end", days[-1])
        epsgs = {p.epsg for p in products}
        if len(epsgs) == 1 and products[0].origin and params.get("crs") is None:
            # one tile CRS: the AOI's grid in it, lined up with the tiles' pixels at any resolution
            params["crs"] = f"EPSG:{products[0].epsg}"
            params.setdefault("grid_origin", products[0].origin)
        return [make_request(aoi=aoi, input=[str(p.path) for p in products], level=level, **params)]
    requests = []
    base_id = params.pop("run_id", None)
    for p in products:
        area = _area_km2(p.footprint)
        kw = dict(params)
        kw.setdefault("start", p.datetime.date())
        kw.setdefault("end", p.datetime.date())
        if kw.get("crs") is None and p.epsg:
            kw["crs"] = f"EPSG:{p.epsg}"
            if p.origin:
                kw.setdefault("grid_origin", p.origin)
        kw["max_aoi_km2"] = max(float(kw.get("max_aoi_km2") or get_settings().max_aoi_km2), area * 1.05)
        run_id = f"{base_id}-{p.id}" if base_id and len(products) > 1 else (base_id or p.id)
        requests.append(make_request(aoi=p.footprint, input=[str(p.path)], level=level, run_id=run_id, **kw))
    return requests


def _area_km2(footprint: Any) -> float:
    return parse_aoi(footprint).area_km2


def preprocess_safe(
    inputs: Sequence[str | Path],
    aoi: Any = None,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    scheduler: "str | object | None" = None,
    workers: int = 2,
    **params: Any,
) -> list[BatchResult]:
    """Preprocess local SAFE products (see :func:`safe_requests`); one result per run."""
    requests = safe_requests(inputs, aoi, **params)
    log.info("%d SAFE run(s) to do", len(requests))
    return preprocess_batch(requests, progress, cancel, scheduler=scheduler, workers=workers)
