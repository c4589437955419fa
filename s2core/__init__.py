"""s2core: Sentinel-2 L2A scenes for an AOI and dates → analysis-ready 10 m rasters and masks.

Public API (imported lazily: ``import s2core`` loads nothing heavy)::

    from s2core import make_request, preprocess, plan, predict, CancelToken

Stages (each a subpackage; README's architecture section gives the import rule of each):
``model`` (values) → ``runfolder`` (the on-disk contract) → ``search`` (catalogs) → ``planner`` →
``read`` → ``write`` → ``stack`` → ``masks`` → ``run`` (one acquisition, runs, Dask, jobs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AOI": "s2core.model.aoi",
    "parse_aoi": "s2core.model.aoi",
    "S2CoreError": "s2core.errors",
    "Manifest": "s2core.runfolder.manifest",
    "load_manifest": "s2core.runfolder.manifest",
    "plan": "s2core.planner",
    "preprocess": "s2core.run.preprocess",
    "preprocess_batch": "s2core.run.batch",
    "split_features": "s2core.run.batch",
    "Prediction": "s2core.masks.predict",
    "predict": "s2core.masks.predict",
    "CancelToken": "s2core.progress",
    "ProgressEvent": "s2core.progress",
    "PreprocessRequest": "s2core.model.request",
    "MaskOptions": "s2core.model.request",
    "make_request": "s2core.run.request",
    "bound_malloc_arenas": "s2core.allocator",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from s2core.allocator import bound_malloc_arenas
    from s2core.errors import S2CoreError
    from s2core.masks.predict import Prediction, predict
    from s2core.model.aoi import AOI, parse_aoi
    from s2core.model.request import MaskOptions, PreprocessRequest
    from s2core.planner import plan
    from s2core.progress import CancelToken, ProgressEvent
    from s2core.run.batch import preprocess_batch, split_features
    from s2core.run.preprocess import preprocess
    from s2core.run.request import make_request
    from s2core.runfolder.manifest import Manifest, load_manifest


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 's2core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
