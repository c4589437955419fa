"""s2core: Sentinel-2 L2A scenes for an AOI and dates → analysis-ready 10 m rasters and masks.

Public API::

    from s2core import make_request, preprocess, plan, predict, CancelToken
"""

from __future__ import annotations

__version__ = "0.1.0"

from s2core.aoi import AOI, parse_aoi
from s2core.errors import S2CoreError
from s2core.manifest import Manifest
from s2core.pipeline import load_manifest, plan, preprocess
from s2core.predict import Prediction, predict
from s2core.progress import CancelToken, ProgressEvent
from s2core.request import PreprocessRequest, make_request

__all__ = [
    "AOI", "CancelToken", "Manifest", "Prediction", "PreprocessRequest", "ProgressEvent", "S2CoreError",
    "load_manifest", "make_request", "parse_aoi", "plan", "predict", "preprocess", "__version__",
]
