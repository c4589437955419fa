"""s2core.model.decision: how cloud and shadow probabilities become cloud and shadow pixels.

Two rules, one definition each:

* ``threshold``: cloud where ``p_cloud > cloud_thr``, shadow where ``p_shadow > shadow_thr`` (the
  reference's rule; FarmVibes.AI uses 0.3 / 0.2 for its own models);
* ``argmax``: the class of highest probability among clear (``1 − p_cloud − p_shadow``), cloud and
  shadow, ties to the earlier class, as ``numpy.argmax`` over a 3-class softmax decides — the
  U-Nets' own decision.

Each model card states the rule that reproduces its model's own decision
(:func:`s2core.masks.registry.decision_for`); ``cloud_thr`` / ``shadow_thr`` given by the user
switch to ``threshold``. NaN (no data) is never cloud nor shadow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Rule = Literal["argmax", "threshold"]


@dataclass(frozen=True)
class Decision:
    """A decision rule and its thresholds (``threshold`` rule only)."""

    rule: Rule = "threshold"
    cloud_thr: float = 0.3
    shadow_thr: float = 0.2

    def flags(self, cloud: np.ndarray, shadow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cloud, shadow) booleans from probabilities in 0..1 (float; NaN: no data)."""
        with np.errstate(invalid="ignore"):
            if self.rule == "argmax":
                clear = 1.0 - cloud - shadow
                return (cloud > clear) & (cloud >= shadow), (shadow > clear) & (shadow > cloud)
            return cloud > self.cloud_thr, shadow > self.shadow_thr

    def describe(self) -> str:
        """``argmax`` or ``cloud > 0.3, shadow > 0.2``."""
        if self.rule == "argmax":
            return "argmax (the model's own decision)"
        return f"cloud > {self.cloud_thr:g}, shadow > {self.shadow_thr:g}"

    def to_dict(self) -> dict[str, Any]:
        """What the manifest and the tags record."""
        if self.rule == "argmax":
            return {"rule": "argmax"}
        return {"rule": "threshold", "cloud_thr": self.cloud_thr, "shadow_thr": self.shadow_thr}


#: The reference's rule (FarmVibes.AI ``merge_cloud_masks_simple``: cloud > 0.3, shadow > 0.2).
REFERENCE_DECISION = Decision("threshold", 0.3, 0.2)
