"""s2core.model.scene: what a catalog hands on — scenes, their angles, acquisitions and signing.

Values only: a :class:`Scene` is one Sentinel-2 product (a STAC item or a SAFE product) reduced to
what s2core needs; an :class:`Acquisition` is the scenes of one satellite pass chosen to cover an
AOI. Catalogs (``s2core.search``) build them; every later stage only reads them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol

from shapely.geometry.base import BaseGeometry

from s2core.errors import MissingAsset


@dataclass(frozen=True)
class ViewAngles:
    """Mean sun and viewing angles of a scene, in degrees (azimuths clockwise from north).

    Parsed once where the metadata is read (STAC ``view:*`` or ``s2:mean_solar_*`` properties,
    or the SAFE ``MTD_TL.xml``); every output takes them from here.
    """

    sun_azimuth: Optional[float] = None
    sun_elevation: Optional[float] = None
    incidence_angle: Optional[float] = None
    view_azimuth: Optional[float] = None

    #: field name -> STAC ``view`` extension property
    STAC_NAMES = {"sun_azimuth": "view:sun_azimuth", "sun_elevation": "view:sun_elevation",
                  "incidence_angle": "view:incidence_angle", "view_azimuth": "view:azimuth"}

    @property
    def sun_zenith(self) -> Optional[float]:
        """90° minus the sun elevation."""
        return None if self.sun_elevation is None else 90.0 - self.sun_elevation

    def stac_properties(self) -> dict[str, float]:
        """The known angles as STAC ``view`` properties (rounded to 1e-6°, sorted by name)."""
        return dict(sorted((stac, round(v, 6)) for name, stac in self.STAC_NAMES.items()
                           if (v := getattr(self, name)) is not None))

    def tags(self) -> dict[str, str]:
        """The known angles as GeoTIFF tags (``SUN_AZIMUTH``, ``SUN_ELEVATION``, ``INCIDENCE_ANGLE``, ``AZIMUTH``)."""
        return {stac.split(":")[1].upper(): f"{v:.6f}" for stac, v in self.stac_properties().items()}

    @classmethod
    def mean(cls, angles: "list[ViewAngles]") -> "ViewAngles":
        """Per-angle mean over the scenes that report it."""
        out: dict[str, float] = {}
        for name in cls.STAC_NAMES:
            values = [v for a in angles if (v := getattr(a, name)) is not None]
            if values:
                out[name] = round(sum(values) / len(values), 6)
        return cls(**out)


@dataclass(frozen=True)
class Scene:
    """One Sentinel-2 product (a STAC item or a SAFE product) reduced to what s2core needs."""

    id: str
    datetime: dt.datetime
    platform: str
    tile: str
    relative_orbit: Optional[int]
    datatake: Optional[str]
    footprint: BaseGeometry
    cloud_cover: Optional[float]
    baseline: Optional[float]
    generation_time: Optional[str]
    hrefs: Mapping[str, str]  # canonical band (B02 … SCL, MSK_CLASSI, MSK_CLOUDS) -> absolute, unsigned href
    offsets: Mapping[str, float]  # canonical band -> DN offset
    item: Mapping[str, Any] = field(repr=False, compare=False, hash=False)
    level: str = "L2A"  # "L1C" for top-of-atmosphere products (SAFE input)
    angles: ViewAngles = field(default_factory=ViewAngles)

    @property
    def mask_layers(self) -> tuple[str, ...]:
        """The assets that hold the product's own cloud mask: SCL (L2A), MSK_CLASSI or MSK_CLOUDS (L1C)."""
        if self.level == "L2A":
            return ("SCL",)
        return tuple(k for k in L1C_MASK_LAYERS if k in self.hrefs)[:1]

    def href(self, band: str) -> str:
        """The asset href of ``band``; :class:`MissingAsset` names the item and what it has."""
        try:
            return self.hrefs[band]
        except KeyError:
            raise MissingAsset(
                f"Item {self.id} has no asset for {band} (it has {', '.join(sorted(self.hrefs)) or 'none'}): "
                "drop that band from 'bands', or use a catalog or product that has it."
            ) from None


#: Platform codes -> STAC ``platform`` names.
PLATFORMS: Mapping[str, str] = {"S2A": "sentinel-2a", "S2B": "sentinel-2b", "S2C": "sentinel-2c", "S2D": "sentinel-2d"}


def stac_platform(code: str) -> str:
    """The STAC ``platform`` of a platform code (``S2A`` -> ``sentinel-2a``)."""
    return PLATFORMS.get(code, code)


#: Asset names of an L1C product's own cloud masks, best first: the ``MSK_CLASSI_B00`` raster
#: (baseline 04.00 on) and the ``MSK_CLOUDS_B00.gml`` polygons (before).
L1C_MASK_LAYERS: tuple[str, ...] = ("MSK_CLASSI", "MSK_CLOUDS")


@dataclass(frozen=True)
class Acquisition:
    """The scenes of one satellite pass over the AOI on one day, in mosaic priority order."""

    id: str
    datetime: dt.datetime
    platform: str
    relative_orbit: Optional[int]
    scenes: tuple[Scene, ...]
    coverage: float  # fraction of the AOI inside the chosen footprints

    @property
    def tiles(self) -> list[str]:
        """MGRS tiles used, in priority order, without repeats."""
        return list(dict.fromkeys(s.tile for s in self.scenes))

    @property
    def date(self) -> dt.date:
        """The UTC day of the pass."""
        return self.datetime.date()

    @property
    def angles(self) -> ViewAngles:
        """Mean sun and view angles over the scenes that report them."""
        return ViewAngles.mean([s.angles for s in self.scenes])

    @property
    def cloud_cover(self) -> Optional[float]:
        """Mean product cloud cover (%) of the scenes used, None when no scene reports it."""
        values = [s.cloud_cover for s in self.scenes if s.cloud_cover is not None]
        return sum(values) / len(values) if values else None

    @property
    def iso_datetime(self) -> str:
        """The pass's start time as ISO 8601 with ``Z``."""
        return self.datetime.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SkippedDate:
    """An acquisition that was not processed, and why."""

    date: str
    acquisition_id: str
    reason: str
    coverage: Optional[float] = None
    items: tuple[str, ...] = field(default_factory=tuple)


class Signer(Protocol):
    """Turns an unsigned asset href into one the reader may open. ``force`` drops cached tokens."""

    def __call__(self, href: str, force: bool = False) -> str: ...


def no_signing(href: str, force: bool = False) -> str:
    """The identity signer (public catalogs, local files)."""
    return href
