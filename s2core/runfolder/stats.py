"""s2core.runfolder.stats: exact statistics of uint8 class and probability rasters, block by block.

Used by the tile server's statistics endpoints and the app's comparison panel. Every figure is
computed over the full-resolution raster with bounded memory (one internal block at a time),
so a 10980 x 10980 mask costs about one block of memory, not 120 MB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio

from s2core.runfolder.layout import PROB_NODATA, PROB_SCALE
from s2core.model.classes import CLEAR, CLOUD, MASK_CLASSES, NODATA, SHADOW


def value_counts(path: Path, band: int = 1) -> np.ndarray:
    """Counts of every value 0..255 in one uint8 band (length 256), streaming block windows."""
    counts = np.zeros(256, dtype=np.int64)
    with rasterio.open(path) as ds:
        if ds.dtypes[band - 1] != "uint8":
            raise ValueError(f"{Path(path).name}: band {band} is {ds.dtypes[band - 1]}, expected uint8")
        for _, window in ds.block_windows(band):
            counts += np.bincount(ds.read(band, window=window).ravel(), minlength=256)
    return counts


def confusion_counts(path_a: Path, path_b: Path, n: int = len(MASK_CLASSES)) -> np.ndarray:
    """``(n, n)`` pixel counts of class ``i`` in ``path_a`` and ``j`` in ``path_b`` (same grid)."""
    out = np.zeros((n, n), dtype=np.int64)
    with rasterio.open(path_a) as a, rasterio.open(path_b) as b:
        if (a.width, a.height, a.transform) != (b.width, b.height, b.transform):
            raise ValueError(f"{Path(path_a).name} and {Path(path_b).name} are not on the same grid")
        for _, window in a.block_windows(1):
            va = np.minimum(a.read(1, window=window).ravel(), n - 1).astype(np.int64)
            vb = np.minimum(b.read(1, window=window).ravel(), n - 1).astype(np.int64)
            out += np.bincount(va * n + vb, minlength=n * n).reshape(n, n)
    return out


@dataclass(frozen=True)
class ClassStats:
    """Pixel counts and percentages of a class mask (codes of :data:`s2core.model.classes.MASK_CLASSES`)."""

    counts: dict[str, int]
    percent_of_valid: dict[str, float]
    nodata_percent: float
    valid_pixels: int
    total_pixels: int


def class_stats(counts: np.ndarray, classes: dict[int, str] = MASK_CLASSES, nodata: int = NODATA) -> ClassStats:
    """Per-class counts and percentages (of valid pixels) from :func:`value_counts`."""
    total = int(counts.sum())
    valid = total - int(counts[nodata])
    named = {name: int(counts[code]) for code, name in classes.items()}
    pct = {name: (100.0 * c / valid if valid else 0.0) for name, c in named.items() if name != classes[nodata]}
    return ClassStats(named, pct, 100.0 * counts[nodata] / total if total else 0.0, valid, total)


@dataclass(frozen=True)
class ProbabilityStats:
    """Statistics of a probability raster stored as uint8 ``p x scale`` (:data:`~s2core.runfolder.layout.PROB_NODATA` = nodata)."""

    valid_pixels: int
    mean: Optional[float]
    percentiles: dict[str, float]
    histogram: list[int]
    bin_edges: list[float]
    above: dict[str, float] = field(default_factory=dict)


def probability_stats(counts: np.ndarray, scale: float = PROB_SCALE, nodata: int = PROB_NODATA, bins: int = 10,
                      thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)) -> ProbabilityStats:
    """Exact mean, percentiles, a histogram and the percentage above thresholds, from value counts."""
    c = counts.astype(np.int64).copy()
    c[nodata] = 0
    c[int(scale) + 1:] = 0
    n = int(c.sum())
    p = np.arange(256) / scale
    edges = np.linspace(0.0, 1.0, bins + 1)
    if n == 0:
        return ProbabilityStats(0, None, {}, [0] * bins, edges.tolist())
    cum = np.cumsum(c)
    pct = {f"p{q}": float(p[int(np.searchsorted(cum, q / 100.0 * n, side="left"))]) for q in (5, 25, 50, 75, 95)}
    idx = np.minimum((p * bins).astype(int), bins - 1)
    hist = np.bincount(idx, weights=c, minlength=bins)[:bins].astype(np.int64)
    above = {f"{t:g}": 100.0 * float(c[p > t].sum()) / n for t in thresholds}
    return ProbabilityStats(n, float((p * c).sum() / n), pct, hist.tolist(), edges.tolist(), above)


@dataclass(frozen=True)
class Agreement:
    """How a model mask agrees with the product mask over pixels valid in both."""

    labels: list[str]
    matrix: list[list[int]]  # rows: model class, columns: product class
    pixels: int
    overall: float
    iou: dict[str, Optional[float]]
    model_percent: dict[str, float]
    product_percent: dict[str, float]


def agreement(confusion: np.ndarray, classes: dict[int, str] = MASK_CLASSES, nodata: int = NODATA) -> Agreement:
    """Agreement figures from :func:`confusion_counts` (model = rows, product = columns).

    Pixels that are nodata in either mask are left out. IoU is given for clear, cloud and shadow
    (``None`` where neither mask has the class).
    """
    keep = [code for code in classes if code != nodata]
    m = confusion[np.ix_(keep, keep)].astype(np.int64)
    n = int(m.sum())
    labels = [classes[c] for c in keep]
    iou: dict[str, Optional[float]] = {}
    for code in (CLEAR, CLOUD, SHADOW):
        i = keep.index(code)
        union = int(m[i, :].sum() + m[:, i].sum() - m[i, i])
        iou[classes[code]] = float(m[i, i] / union) if union else None
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    return Agreement(
        labels=labels, matrix=m.tolist(), pixels=n,
        overall=float(np.trace(m) / n) if n else 0.0, iou=iou,
        model_percent={lab: (100.0 * float(rows[i]) / n if n else 0.0) for i, lab in enumerate(labels)},
        product_percent={lab: (100.0 * float(cols[i]) / n if n else 0.0) for i, lab in enumerate(labels)},
    )


def mask_agreement(model: Path, product: Path) -> Agreement:
    """Agreement of a model mask file with a product mask file (pixels valid in both), computed once per
    file version: the tile server's ``/agreement`` and the app's Compare page both call this."""
    model, product = Path(model), Path(product)
    return _mask_agreement(str(model), str(product), (model.stat().st_mtime_ns, product.stat().st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _mask_agreement(model: str, product: str, stamp: tuple[int, int]) -> Agreement:
    return agreement(confusion_counts(Path(model), Path(product)))
