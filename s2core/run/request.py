"""s2core.run.request: a request checked against what is installed — GDAL drivers and models.

:func:`make_request` is the one way the CLI, the app and Python callers build a request: the
request model's own validation (:mod:`s2core.model.request`), the settings' AOI limit, then
:func:`complete_request` (output driver proved writable, ``auto`` models resolved and checked
against the bands and the level).

Example:
    >>> req = make_request(aoi="POLYGON((16 46,16.01 46,16.01 46.01,16 46.01,16 46))",
    ...                    start="2023-08-10", end="2023-08-20", bands="B04,B08")
    >>> req.bands
    ('B04', 'B08')
"""

from __future__ import annotations

from typing import Any

from s2core.masks.registry import resolve_mask_options
from s2core.model.request import PreprocessRequest, parse_request
from s2core.settings import get_settings
from s2core.write.formats import check_output_format


def make_request(**kwargs: Any) -> PreprocessRequest:
    """Build and complete a :class:`~s2core.model.request.PreprocessRequest`; one precise
    :class:`~s2core.errors.S2CoreError` for anything wrong."""
    kwargs.setdefault("max_aoi_km2", get_settings().max_aoi_km2)
    return complete_request(parse_request(**kwargs))


def complete_request(request: PreprocessRequest) -> PreprocessRequest:
    """``request`` with its output driver canonical and its models resolved (idempotent).

    Raises:
        InvalidParameter: a driver that cannot write the raster.
        UnknownModel, ModelBandsMissing, InvalidModel: a model that does not exist or does not fit.
    """
    update: dict[str, Any] = {}
    driver = check_output_format(request.output_format, len(request.bands))
    if driver != request.output_format:
        update["output_format"] = driver
    if request.masks is not None:
        resolved = resolve_mask_options(request.masks, request.bands, request.level)
        if resolved != request.masks:
            update["masks"] = resolved
    return request.model_copy(update=update) if update else request
