"""s2core.masks.ensemble: several models' probabilities of one class combined into one (the ensemble rule)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def ensemble_mean(parts: Sequence[np.ndarray]) -> Optional[np.ndarray]:
    """The mean over models of one class's probabilities (same shape each); None without any model.

    A pixel that any model leaves NaN (no data there) is NaN in the result: callers turn NaN into
    their own nodata. Used by the masks stage and by :func:`s2core.predict` alike.
    """
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    with np.errstate(invalid="ignore"):
        return np.mean(np.stack(parts), axis=0)
