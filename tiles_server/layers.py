"""tiles_server.layers: what each layer reads, how it is drawn, and its legend.

A layer is a fixed recipe over one output of an acquisition (``raster``, ``mask``, …). Clients
choose a layer by name and may tune only the documented knobs (stretch, colormap, ``min``,
opacity); they never send expressions or band indexes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
from rio_tiler.colormap import cmap

from s2core.model.classes import CLOUD, MASK_CLASSES, NODATA, SCL_NAMES, SHADOW
from s2core.runfolder.layout import CLOUD_MASK, PROB_NODATA, PROB_SCALE

LayerKind = Literal["composite", "index", "categorical", "continuous"]
RGBA = tuple[int, int, int, int]

#: Fill value for pixels outside the raster when a class layer also draws its nodata class.
OUTSIDE = 254


@dataclass(frozen=True)
class CategoricalClass:
    """One class of a categorical layer."""

    value: int
    label: str
    color: RGBA


@dataclass(frozen=True)
class Layer:
    """A drawable layer over one output role of an acquisition."""

    name: str
    title: str
    role: str
    kind: LayerKind
    description: str
    bands: tuple[str, ...] = ()
    rescale: Optional[tuple[float, float]] = None
    colormap: Optional[str] = None
    classes: tuple[CategoricalClass, ...] = ()
    draw_nodata: bool = False
    scale: float = 1.0
    nodata: Optional[int] = None
    default_min: float = 0.0
    unit: str = ""
    versus: Optional[str] = None  # a second output role compared with ``role`` pixel by pixel

    def available(self, outputs: dict[str, str], bands: list[str]) -> bool:
        """True when the acquisition has this layer's output(s) and bands."""
        return self.role in outputs and (self.versus is None or self.versus in outputs) and \
            all(b in bands for b in self.bands)

    def band_indexes(self, bands: list[str]) -> tuple[int, ...]:
        """1-based indexes of this layer's bands in the raster (whose band order is ``bands``)."""
        return tuple(bands.index(b) + 1 for b in self.bands) if self.bands else (1,)


_CLEAR: RGBA = (0, 0, 0, 0)
MASK_COLORS: dict[str, RGBA] = {
    "nodata": (64, 64, 64, 160),
    "clear": _CLEAR,
    "cloud": (255, 212, 0, 255),
    "shadow": (123, 63, 228, 255),
    "snow": (0, 229, 255, 255),
    "defective": (255, 23, 68, 255),
}

_MASK_CLASSES = tuple(CategoricalClass(code, name, MASK_COLORS[name]) for code, name in MASK_CLASSES.items())

#: ESA's Scene Classification palette (as in SNAP), by SCL code; the names are those of the one SCL table.
SCL_COLORS: dict[int, RGBA] = {
    0: (0, 0, 0, 160), 1: (255, 0, 0, 255), 2: (47, 47, 47, 255), 3: (100, 50, 0, 255), 4: (0, 160, 0, 255),
    5: (255, 230, 90, 255), 6: (0, 0, 255, 255), 7: (128, 128, 128, 255), 8: (192, 192, 192, 255),
    9: (255, 255, 255, 255), 10: (100, 200, 255, 255), 11: (255, 150, 255, 255),
}
_SCL_CLASSES = tuple(CategoricalClass(code, name, SCL_COLORS[code]) for code, name in SCL_NAMES.items())

#: Disagreement codes: model mask (cloud or shadow) against product mask, pixel by pixel.
AGREE_CLEAR, MODEL_ONLY, PRODUCT_ONLY, OTHER_CLASS, BOTH = 1, 2, 3, 4, 5
_DISAGREEMENT_CLASSES = (
    CategoricalClass(0, "nodata", MASK_COLORS["nodata"]),
    CategoricalClass(AGREE_CLEAR, "both clear", _CLEAR),
    CategoricalClass(MODEL_ONLY, "model only (cloud or shadow)", (255, 120, 0, 255)),
    CategoricalClass(PRODUCT_ONLY, "product only (cloud or shadow)", (0, 170, 255, 255)),
    CategoricalClass(OTHER_CLASS, "both, different class (cloud vs shadow)", (230, 0, 200, 255)),
    CategoricalClass(BOTH, "both, same class", (255, 255, 255, 110)),
)


def disagreement(model: np.ndarray, product: np.ndarray) -> np.ndarray:
    """Disagreement codes of two mask-code arrays (0 where either has no data)."""
    m = (model == CLOUD) | (model == SHADOW)
    p = (product == CLOUD) | (product == SHADOW)
    out = np.full(model.shape, AGREE_CLEAR, dtype=np.uint8)
    out[m & ~p] = MODEL_ONLY
    out[p & ~m] = PRODUCT_ONLY
    out[m & p] = np.where(model[m & p] == product[m & p], BOTH, OTHER_CLASS)
    out[(model == NODATA) | (product == NODATA)] = 0
    return out


_BINARY_CLASSES = (
    CategoricalClass(0, "clear", _CLEAR),
    CategoricalClass(1, "cloud or shadow", MASK_COLORS["cloud"]),
    CategoricalClass(CLOUD_MASK.nodata, "nodata", MASK_COLORS["nodata"]),
)

LAYERS: dict[str, Layer] = {layer.name: layer for layer in (
    Layer("rgb", "True colour", "raster", "composite", "B04/B03/B02, reflectance stretched 0-0.3",
          bands=("B04", "B03", "B02"), rescale=(0.0, 3000.0), unit="DN (reflectance x 10000)"),
    Layer("falsecolor", "False colour (NIR)", "raster", "composite", "B08/B04/B03, vegetation in red",
          bands=("B08", "B04", "B03"), rescale=(0.0, 4500.0), unit="DN (reflectance x 10000)"),
    Layer("ndvi", "NDVI", "raster", "index", "(B08 - B04) / (B08 + B04)",
          bands=("B08", "B04"), rescale=(-0.2, 0.9), colormap="rdylgn", unit="NDVI"),
    Layer("scl", "Scene classification (SCL)", "scl", "categorical", "the product's SCL band",
          classes=_SCL_CLASSES, draw_nodata=True, nodata=0),
    Layer("product_mask", "Product mask (from SCL)", "product_mask", "categorical",
          "SCL mapped to clear / cloud / shadow / snow / defective", classes=_MASK_CLASSES, draw_nodata=True, nodata=0),
    Layer("mask", "Model mask (merged)", "mask", "categorical",
          "the models' decision merged with the product mask, shadow-checked and dilated",
          classes=_MASK_CLASSES, draw_nodata=True, nodata=0),
    Layer("disagreement", "Model vs product disagreement", "mask", "categorical",
          "where the model mask and the product mask disagree on cloud/shadow", classes=_DISAGREEMENT_CLASSES,
          draw_nodata=True, nodata=0, versus="product_mask"),
    Layer("cloud_mask", "Binary cloud mask", "cloud_mask", "categorical",
          "the reference's binary mask (1 = cloud or shadow)", classes=_BINARY_CLASSES, draw_nodata=True, nodata=CLOUD_MASK.nodata),
    Layer("cloud_prob", "Cloud probability", "cloud_prob", "continuous", "model cloud probability",
          colormap="magma", scale=PROB_SCALE, nodata=PROB_NODATA, default_min=0.05, unit="probability"),
    Layer("shadow_prob", "Shadow probability", "shadow_prob", "continuous", "model shadow probability",
          colormap="viridis", scale=PROB_SCALE, nodata=PROB_NODATA, default_min=0.05, unit="probability"),
)}


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` of float arrays, 0 where both are 0: the ``index`` layers' formula (NDVI: B08, B04)."""
    total = a + b
    return np.divide(a - b, total, out=np.zeros_like(total), where=total != 0)


def hex_color(rgba: RGBA) -> str:
    """``#rrggbb`` of an RGBA tuple."""
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3])


@functools.lru_cache(maxsize=64)
def ramp(name: str) -> np.ndarray:
    """A rio-tiler colormap as a read-only (256, 4) uint8 array (loaded once per name)."""
    m = cmap.get(name)
    out = np.array([m[i] for i in range(256)], dtype=np.uint8)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=256)
def categorical_lut(layer: Layer, opacity: float) -> np.ndarray:
    """A (256, 4) uint8 lookup table: class value -> RGBA; unknown values and OUTSIDE are transparent."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for c in layer.classes:
        lut[c.value] = (*c.color[:3], round(c.color[3] * opacity))
    lut[OUTSIDE] = 0
    lut.flags.writeable = False
    return lut


@functools.lru_cache(maxsize=256)
def continuous_lut(layer: Layer, colormap: str, minimum: float, opacity: float) -> np.ndarray:
    """A (256, 4) uint8 lookup table for a ``p x scale`` uint8 raster: transparent below ``minimum``."""
    values = np.arange(256) / layer.scale
    idx = np.clip(np.round(values * 255), 0, 255).astype(int)
    lut = ramp(colormap)[idx].copy()
    lut[:, 3] = np.where(values >= minimum, round(255 * opacity), 0)
    lut[values > 1.0] = 0
    if layer.nodata is not None:
        lut[layer.nodata] = 0
    lut.flags.writeable = False
    return lut


def colormap_stops(name: str, n: int = 11) -> list[list[object]]:
    """``[[value, "#rrggbb"], …]`` from 0 to 1 for a legend gradient."""
    colors = ramp(name)
    return [[round(i / (n - 1), 3), hex_color(tuple(int(v) for v in colors[round(255 * i / (n - 1))]))]
            for i in range(n)]


def legend(layer: Layer, *, colormap: Optional[str] = None, minimum: Optional[float] = None,
           rescale: Optional[tuple[float, float]] = None, bands: Optional[list[str]] = None) -> dict[str, object]:
    """Legend data the app draws: classes with colours, or a gradient with its range."""
    doc: dict[str, object] = {"layer": layer.name, "title": layer.title, "kind": layer.kind,
                              "description": layer.description}
    if layer.kind == "categorical":
        doc["classes"] = [{"value": c.value, "label": c.label, "color": hex_color(c.color),
                           "opacity": round(c.color[3] / 255, 3)} for c in layer.classes]
    elif layer.kind == "continuous":
        doc.update({"colormap": colormap or layer.colormap, "stops": colormap_stops(colormap or layer.colormap),
                    "min": layer.default_min if minimum is None else minimum, "max": 1.0, "unit": layer.unit,
                    "below_min": "transparent"})
    elif layer.kind == "index":
        lo, hi = rescale or layer.rescale
        doc.update({"colormap": colormap or layer.colormap, "stops": colormap_stops(colormap or layer.colormap),
                    "min": lo, "max": hi, "unit": layer.unit})
    else:
        lo, hi = rescale or layer.rescale
        doc.update({"bands": list(layer.bands), "rescale": [lo, hi], "unit": layer.unit})
    return doc
