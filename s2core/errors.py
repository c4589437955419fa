"""s2core.errors: one named exception per way a request can go wrong.

Every error carries a message that names the problem *and* what to change, so the
CLI, the app and the tile server can show ``str(err)`` as-is (never a traceback).
"""

from __future__ import annotations


class S2CoreError(Exception):
    """Base class of every error s2core raises on purpose."""


class InvalidParameter(S2CoreError, ValueError):
    """A request parameter has a wrong value (range, type, unknown name)."""


class InvalidSetting(InvalidParameter):
    """An environment setting (``S2CORE_*``, ``S2_*``) has a value that cannot be used."""


class InvalidAOI(InvalidParameter):
    """The area of interest cannot be parsed, is empty, invalid, or not a polygon."""


class AOITooLarge(InvalidAOI):
    """The area of interest exceeds the configured size limit."""


class InvalidDateRange(InvalidParameter):
    """The date range is malformed or ends before it starts."""


class UnknownBand(InvalidParameter):
    """A requested band name is not a Sentinel-2 L2A band."""


class CatalogError(S2CoreError):
    """The STAC catalog could not be used."""


class CatalogUnreachable(CatalogError):
    """The catalog's server or file could not be reached or opened."""


class CatalogResponseError(CatalogError):
    """The catalog answered with something that is not valid STAC."""


class NoItemsFound(CatalogError):
    """The search returned no Sentinel-2 item for the AOI and dates."""


class NoAcquisitionCovers(S2CoreError):
    """Items were found but no acquisition passed tile selection."""


class MissingAsset(S2CoreError):
    """An item has no asset for a requested band."""


class AssetReadError(S2CoreError):
    """An asset could not be read (after retries)."""


class AssetTimeout(AssetReadError):
    """Reading an asset took longer than ``dl_timeout``."""


class Cancelled(S2CoreError):
    """The run was cancelled by the user."""


class ModelError(InvalidParameter):
    """A cloud/shadow model cannot be used as asked."""


class UnknownModel(ModelError):
    """No registered model and no ONNX file has this name."""


class InvalidModel(ModelError):
    """A model file is missing, not a valid ONNX model, or does not match its card."""


class ModelBandsMissing(ModelError):
    """A model needs bands that the raster (or the array given to predict) lacks."""


class InvalidProduct(S2CoreError):
    """A local Sentinel-2 product (SAFE folder or zip) that is missing, incomplete or corrupt."""


class RunInUse(S2CoreError):
    """Another live process is writing the run folder (same run id at once)."""


class OutputWriteError(S2CoreError):
    """An output could not be written completely (disk full, permissions, a failing disk)."""


class DiskFull(OutputWriteError):
    """Not enough free space for an acquisition's outputs."""


class PolicyViolation(InvalidParameter):
    """A catalog, host or path that this deployment's access policy does not allow."""
