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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class RunEstimate:
    """What a run will make, before it reads a pixel (the app shows it before Run)."""

    width: int
    height: int
    acquisitions: int
    output_bytes: int  #: about, all acquisitions together (see :func:`~s2core.run.acquisition.estimated_bytes`)
    warnings: tuple[str, ...]

    @property
    def pixels(self) -> int:
        """Output pixels of the whole run (grid pixels × acquisitions)."""
        return self.width * self.height * self.acquisitions


def estimate(request: PreprocessRequest, acquisitions: int) -> RunEstimate:
    """The output grid, size and plausibility warnings of ``request`` for ``acquisitions`` dates.

    Warns when the output pixels are far coarser than a model's native resolution (the stage's own
    :func:`~s2core.masks.stage.coarse_input_warning`); the source pixels, known only once read, can add to that.
    """
    from s2core.masks.registry import get_card  # lazy: cards are read only when masks are asked for
    from s2core.masks.stage import coarse_input_warning  # lazy: the stage's rule, imported with its numpy
    from s2core.model.grid import output_grid  # lazy: pyproj work only when estimating
    from s2core.run.acquisition import estimated_bytes  # lazy: the writer's own estimate

    grid = output_grid(request.aoi, request.output_crs, request.resolution, request.grid_origin)
    warnings = []
    if request.masks is not None:  # the models see pixels at least as coarse as the output grid's
        for name in dict.fromkeys((*request.masks.cloud_model, request.masks.shadow_model)):
            card = get_card(name)
            warning = coarse_input_warning(card, {b: request.resolution for b in card.bands})
            if warning:
                warnings.append(warning)
    return RunEstimate(grid.width, grid.height, acquisitions, estimated_bytes(request, grid) * acquisitions,
                       tuple(warnings))
