"""s2core.search.safe: local Sentinel-2 products in SAFE format (L1C and L2A, zipped or not) as scenes.

A product becomes a :class:`~s2core.search.catalog.Scene` like any STAC item, so the rest of the
pipeline (selection, reading, stacking, masks, outputs) is the same for both inputs. Band
files are read by GDAL in place: ``/vsizip/`` for zips, nothing is extracted.

What is read from the metadata:

* ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``: level, sensing time, spacecraft, processing
  baseline, relative orbit, cloud cover, footprint, the band files (``IMAGE_FILE``) and the
  radiometric offsets (``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` per band; 0 before 04.00).
* ``GRANULE/*/MTD_TL.xml``: tile CRS and the mean sun and viewing angles.
* The product's own cloud mask: SCL for L2A; for L1C ``MSK_CLASSI_B00.jp2`` (baseline
  04.00 and later) or the vector ``MSK_CLOUDS_B00.gml`` (before).

Example:
    >>> products = locate_products(["S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.zip"])  # doctest: +SKIP
    >>> scene = read_product(products[0])                                                                # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional, Sequence
from xml.etree import ElementTree

import shapely
from shapely.geometry import Polygon

from s2core.model.aoi import AOI
from s2core.model.bands import ALL_BANDS, NATIVE_RESOLUTION
from s2core.errors import InvalidProduct
from s2core.model.scene import L1C_MASK_LAYERS, Scene, ViewAngles, no_signing, stac_platform
from s2core.search.catalog import finish_search
from s2core.search.normalize import datatake_id, parse_datetime, platform_code, tile_from_name

log = logging.getLogger(__name__)

MTD_NAMES = ("MTD_MSIL2A.XML", "MTD_MSIL1C.XML")
#: Product-mask layers of an L1C product (keys of :attr:`Scene.hrefs`).
CLASSI, CLOUDS_GML = L1C_MASK_LAYERS
_BAND_RE = re.compile(r"_(B\d{2}|B8A|SCL)(?:_(\d{2})m)?$")


class _Tree:
    """Files of one product, in a folder or a zip, addressed by path relative to the SAFE root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: Optional[zipfile.ZipFile] = None
        if path.is_dir():
            files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
            self.prefix = ""
        else:
            try:
                self.zip = zipfile.ZipFile(path)
                members = [n for n in self.zip.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InvalidProduct(
                    f"{path.name} is not a readable zip ({exc}): the download is probably truncated, download it again."
                ) from exc
            mtd = sorted((n for n in members if PurePosixPath(n).name.upper() in MTD_NAMES), key=lambda n: n.count("/"))
            self.prefix = str(PurePosixPath(mtd[0]).parent) + "/" if mtd and "/" in mtd[0] else ""
            files = [n[len(self.prefix):] for n in members if n.startswith(self.prefix)]
        self.files = sorted(files)
        self._upper = {f.upper(): f for f in self.files}

    def find(self, name: str) -> Optional[str]:
        """The relative path of ``name`` (case-insensitive), or None."""
        return self._upper.get(name.upper())

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching a regular expression (case-insensitive)."""
        rx = re.compile(pattern, re.I)
        return [f for f in self.files if rx.fullmatch(f)]

    def read(self, rel: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(self.prefix + rel)
            return (self.path / rel).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            raise InvalidProduct(f"Cannot read {rel} in {self.path.name} ({exc}): the product is corrupt.") from exc

    def gdal_path(self, rel: str) -> str:
        """A path GDAL opens in place (``/vsizip/`` inside zips)."""
        if self.zip is not None:
            return f"/vsizip/{self.path.resolve()}/{self.prefix}{rel}"
        return str((self.path / rel).resolve())


def read_href_bytes(href: str) -> bytes:
    """The bytes of a file named by a :meth:`_Tree.gdal_path` (a plain path or ``/vsizip/…``)."""
    if href.startswith("/vsizip/"):
        archive, _, member = href[len("/vsizip/"):].partition(".zip/")
        with zipfile.ZipFile(archive + ".zip") as zf:
            return zf.read(member)
    return Path(href).read_bytes()


def is_product(path: Path) -> bool:
    """True for a zip file or a folder holding a product-level ``MTD_MSIL*.xml``."""
    if path.is_file():
        return path.suffix.lower() == ".zip"
    return path.is_dir() and any(p.name.upper() in MTD_NAMES for p in path.iterdir() if p.is_file())


def locate_products(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand ``inputs`` (products, or folders of products) to product paths, sorted and unique.

    Raises:
        InvalidProduct: an input does not exist, or is a folder that neither is a SAFE
            product nor holds any ``.SAFE`` folder or ``.zip``.
    """
    found: list[Path] = []
    for raw in inputs:
        path = Path(str(raw)).expanduser()
        if not path.exists():
            raise InvalidProduct(f"Input {str(raw)!r} does not exist: give a .SAFE folder, a .zip or a folder of them.")
        if is_product(path):
            found.append(path)
            continue
        if path.is_dir():
            children = [p for p in sorted(path.iterdir()) if is_product(p)]
            if children:
                found.extend(children)
                continue
        raise InvalidProduct(
            f"{path.name} is not a Sentinel-2 SAFE product: it has no MTD_MSIL2A.xml or MTD_MSIL1C.xml"
            + (" and holds no .SAFE folder or .zip product" if path.is_dir() else "")
            + ". Give the product's .SAFE folder or its .zip."
        )
    return sorted(dict.fromkeys(p.resolve() for p in found))


# --- XML helpers (namespace-agnostic) ---------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _iter(root: ElementTree.Element, name: str) -> Iterable[ElementTree.Element]:
    return (e for e in root.iter() if _local(e.tag) == name)


def _text(root: ElementTree.Element, name: str) -> Optional[str]:
    el = next(_iter(root, name), None)
    return el.text.strip() if el is not None and el.text else None


def _parse_xml(tree: _Tree, rel: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(tree.read(rel))
    except ElementTree.ParseError as exc:
        raise InvalidProduct(f"{rel} in {tree.path.name} is not valid XML ({exc}): the product is corrupt.") from exc


def _band_name(physical: str) -> str:
    """``B1`` → ``B01``, ``B8A`` → ``B8A``."""
    p = physical.strip().upper()
    return p if p == "B8A" else f"B{int(p[1:]):02d}"


def tile_angles(root: ElementTree.Element) -> ViewAngles:
    """Mean sun angles and mean viewing incidence angles (averaged over bands) of ``MTD_TL.xml``."""
    sun = next(_iter(root, "Mean_Sun_Angle"), None)
    if sun is None:
        return ViewAngles()
    zenith, azimuth = _text(sun, "ZENITH_ANGLE"), _text(sun, "AZIMUTH_ANGLE")
    if zenith is None or azimuth is None:
        return ViewAngles()
    views = [(float(_text(v, "ZENITH_ANGLE") or "nan"), float(_text(v, "AZIMUTH_ANGLE") or "nan"))
             for v in _iter(root, "Mean_Viewing_Incidence_Angle")]
    views = [v for v in views if v[0] == v[0] and v[1] == v[1]]
    mean = [round(sum(v[k] for v in views) / len(views), 6) if views else None for k in (0, 1)]
    return ViewAngles(sun_azimuth=round(float(azimuth), 6), sun_elevation=round(90.0 - float(zenith), 6),
                      incidence_angle=mean[0], view_azimuth=mean[1])


@dataclass(frozen=True)
class SafeProduct:
    """What s2core needs of one SAFE product; :meth:`scene` turns it into a pipeline scene."""

    path: Path
    level: str  # "L2A" or "L1C"
    product_uri: str
    datetime: dt.datetime
    platform: str
    tile: str
    relative_orbit: Optional[int]
    datatake: Optional[str]
    baseline: Optional[float]
    cloud_cover: Optional[float]
    footprint: Any  # shapely geometry, lon/lat
    epsg: Optional[int]
    origin: Optional[tuple[float, float]]  # the tile's upper-left corner in its CRS (MTD_TL Geoposition)
    hrefs: dict[str, str]
    offsets: dict[str, float]
    angles: ViewAngles

    @cached_property
    def id(self) -> str:
        return self.product_uri.removesuffix(".SAFE")

    def scene(self) -> Scene:
        """The product as a :class:`~s2core.search.catalog.Scene` (a STAC-like item in ``scene.item``)."""
        props: dict[str, Any] = {
            "datetime": self.datetime.isoformat().replace("+00:00", "Z"),
            "platform": stac_platform(self.platform),
            "constellation": "sentinel-2",
            "s2:mgrs_tile": self.tile,
            "s2:product_uri": self.product_uri,
            "s2:product_type": f"S2MSI{self.level[1:]}",
            "sat:relative_orbit": self.relative_orbit,
            "eo:cloud_cover": self.cloud_cover,
        }
        if self.baseline is not None:
            props["s2:processing_baseline"] = f"{self.baseline:05.2f}"
        if self.epsg:
            props["proj:epsg"] = self.epsg
        props.update(self.angles.stac_properties())
        item = {
            "type": "Feature", "stac_version": "1.0.0", "id": self.id, "properties": props,
            "geometry": shapely.geometry.mapping(self.footprint), "bbox": list(self.footprint.bounds),
            "assets": {k: {"href": v} for k, v in self.hrefs.items()},
        }
        return Scene(
            id=self.id, datetime=self.datetime, platform=self.platform, tile=self.tile,
            relative_orbit=self.relative_orbit, datatake=self.datatake, footprint=self.footprint,
            cloud_cover=self.cloud_cover, baseline=self.baseline, generation_time=None,
            hrefs=dict(self.hrefs), offsets=dict(self.offsets), item=item, level=self.level, angles=self.angles,
        )


def _footprint(root: ElementTree.Element, name: str) -> Any:
    text = _text(root, "EXT_POS_LIST")
    if not text:
        raise InvalidProduct(f"{name}: the product metadata has no footprint (EXT_POS_LIST): the product is incomplete.")
    v = [float(x) for x in text.split()]
    ring = [(v[i + 1], v[i]) for i in range(0, len(v) - 1, 2)]  # lat lon pairs -> lon lat
    geom = shapely.make_valid(Polygon(ring))
    if geom.is_empty:
        raise InvalidProduct(f"{name}: the product footprint is empty.")
    return geom


def _offsets(root: ElementTree.Element, level: str) -> dict[str, float]:
    """Per-band DN offsets from the product metadata (0 when the product has none: baseline < 04.00)."""
    ids = {e.get("bandId"): _band_name(e.get("physicalBand", "")) for e in _iter(root, "Spectral_Information")
           if e.get("bandId") is not None and e.get("physicalBand")}
    if not ids:  # the standard band order when the metadata has no spectral section
        ids = {str(i): b for i, b in enumerate(ALL_BANDS)}
    tag = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    out = {b: 0.0 for b in ids.values()}
    for e in _iter(root, tag):
        band = ids.get(e.get("band_id"))
        if band and e.text:
            out[band] = float(e.text)
    return out


def _band_files(root: ElementTree.Element, tree: _Tree) -> dict[str, str]:
    """The finest file of each band (and SCL) listed by ``IMAGE_FILE``, as GDAL paths."""
    best: dict[str, tuple[int, str]] = {}
    entries = [e.text.strip() for e in _iter(root, "IMAGE_FILE") if e.text]
    if not entries:  # some producers omit the list: fall back to the files present
        entries = [f.rsplit(".", 1)[0] for f in tree.glob(r"GRANULE/[^/]+/IMG_DATA/(R\d\dm/)?[^/]+\.jp2")]
    for entry in entries:
        m = _BAND_RE.search(entry)
        if not m:
            continue
        band = m.group(1)
        res = int(m.group(2)) if m.group(2) else NATIVE_RESOLUTION.get(band, 60)
        rel = tree.find(entry + ".jp2") or tree.find(entry + ".tif")
        if rel is None:
            continue  # listed but absent: requesting the band names it as missing
        if band not in best or res < best[band][0]:
            best[band] = (res, rel)
    return {band: tree.gdal_path(rel) for band, (_, rel) in best.items()}


def read_product(path: str | Path, *, require_bands: bool = True) -> SafeProduct:
    """Parse one product (``.SAFE`` folder or ``.zip``); ``require_bands=False`` reads metadata alone.

    Raises:
        InvalidProduct: not a SAFE product, corrupt zip or XML, or no band file present.
    """
    path = Path(path)
    tree = _Tree(path)
    mtd_rel = next((tree.find(n) for n in MTD_NAMES if tree.find(n)), None)
    if mtd_rel is None:
        raise InvalidProduct(
            f"{path.name} is not a Sentinel-2 SAFE product: it has no MTD_MSIL2A.xml or MTD_MSIL1C.xml."
        )
    level = "L2A" if "L2A" in mtd_rel.upper() else "L1C"
    root = _parse_xml(tree, mtd_rel)
    uri = _text(root, "PRODUCT_URI") or path.name.removesuffix(".zip")
    start = _text(root, "PRODUCT_START_TIME") or _text(root, "DATATAKE_SENSING_START")
    if not start:
        raise InvalidProduct(f"{path.name}: the product metadata has no sensing time (PRODUCT_START_TIME).")
    when = parse_datetime({"datetime": start})
    platform = platform_code({"platform": _text(root, "SPACECRAFT_NAME") or uri[:3]}, uri)
    tile = tile_from_name(uri) or ""
    orbit = _text(root, "SENSING_ORBIT_NUMBER")
    baseline = _text(root, "PROCESSING_BASELINE")
    cloud = _text(root, "Cloud_Coverage_Assessment") or _text(root, "Cloud_Coverage_Assessment".upper())
    datatake = next((e.get("datatakeIdentifier") for e in _iter(root, "Datatake") if e.get("datatakeIdentifier")), None)
    hrefs = _band_files(root, tree)
    if require_bands and not any(b in hrefs for b in ALL_BANDS):
        raise InvalidProduct(
            f"{path.name} holds no band files (IMG_DATA/*.jp2): the product is incomplete; download it again."
        )
    epsg, angles, origin = None, ViewAngles(), None
    tl = tree.glob(r"GRANULE/[^/]+/MTD_TL\.xml")
    if tl:
        tl_root = _parse_xml(tree, tl[0])
        code = _text(tl_root, "HORIZONTAL_CS_CODE")
        epsg = int(code.split(":")[-1]) if code and code.split(":")[-1].isdigit() else None
        angles = tile_angles(tl_root)
        ulx, uly = _text(tl_root, "ULX"), _text(tl_root, "ULY")
        origin = (float(ulx), float(uly)) if ulx and uly else None
        if not tile:
            tile = tile_from_name(_text(tl_root, "TILE_ID") or "") or ""
    if level == "L1C":
        classi = tree.glob(r"GRANULE/[^/]+/QI_DATA/MSK_CLASSI_B00\.jp2")
        gml = tree.glob(r"GRANULE/[^/]+/QI_DATA/MSK_CLOUDS_B00\.gml")
        if classi:
            hrefs[CLASSI] = tree.gdal_path(classi[0])
        elif gml:
            hrefs[CLOUDS_GML] = tree.gdal_path(gml[0])
    return SafeProduct(
        path=path, level=level, product_uri=uri, datetime=when, platform=platform, tile=tile or uri,
        relative_orbit=int(orbit) if orbit and orbit.isdigit() else None,
        datatake=datatake_id(datatake),
        baseline=float(baseline) if baseline else None,
        cloud_cover=float(cloud) if cloud else None,
        footprint=_footprint(root, path.name), epsg=epsg, origin=origin, hrefs=hrefs, offsets=_offsets(root, level), angles=angles,
    )


class SafeCatalog:
    """Local SAFE products searched like a catalog (filtered in memory by AOI and dates)."""

    def __init__(self, inputs: Sequence[str | Path]) -> None:
        self.sign = no_signing
        self.products = [read_product(p) for p in locate_products(inputs)]
        self.name = f"{len(self.products)} SAFE product(s)"

    @property
    def level(self) -> str:
        """The products' level; a mix of L1C and L2A is refused."""
        levels = sorted({p.level for p in self.products})
        if len(levels) != 1:
            raise InvalidProduct(
                "The inputs mix L1C and L2A products: process each level in its own run (their bands and models differ)."
            )
        return levels[0]

    def search(self, aoi: AOI, start: dt.date, end: dt.date, max_cloud_cover: Optional[float] = None) -> list[Scene]:
        scenes = []
        for p in self.products:
            if not (start <= p.datetime.date() <= end) or not p.footprint.intersects(aoi.geometry):
                continue
            if max_cloud_cover is not None and p.cloud_cover is not None and p.cloud_cover > max_cloud_cover:
                continue
            scenes.append(p.scene())
        return finish_search(scenes, self.name, start, end)
