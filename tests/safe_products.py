"""Build small real SAFE products for tests: real metadata from ../shared/data/safe-metadata (or the
ukis-pysat offset vectors) with real Sentinel-2 pixels written as lossless JPEG2000 where the
product's own ``IMAGE_FILE`` list puts them.

Where the metadata and the pixels come from different products, the product footprint
(``EXT_POS_LIST``), the tile CRS (``HORIZONTAL_CS_CODE``) and its corner (``ULX``/``ULY``) are rewritten to those of the
pixels; nothing else is touched.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.windows import Window, bounds as window_bounds

from tests.conftest import MAPCHETE, RKH, SHARED

SAFE_META = SHARED / "safe-metadata"
OFFSETS = SHARED / "l1c" / "ukis-pysat-offsets"
L2A_N0214 = SAFE_META / "esa_S2B_MSIL2A_20210122T133229_N0214_R081_T22HBD_20210122T155500.SAFE"
L2A_N0509 = SAFE_META / "S2A_MSIL2A_20230625T234621_N0509_R073_T01WCP_20230626T022157.SAFE"
L1C_N0400 = "S2B_MSIL1C_20220615T101559_N0400_R065_T32UPC_20220615T122549"
L1C_N0209 = "S2B_MSIL1C_20200406T101559_N0209_R065_T32UPC_20200406T130159"
_BAND_RE = re.compile(r"_(B\d{2}|B8A|SCL)(?:_(\d{2})m)?$")


def write_jp2(path: Path, data: np.ndarray, profile: dict) -> None:
    """Write ``data`` (bands, H, W) as lossless JPEG2000 with the georeferencing of ``profile``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=profile["crs"], transform=profile["transform"],
                       QUALITY=100, REVERSIBLE="YES", RESOLUTIONS=1) as dst:
        dst.write(data)


def footprint_text(bounds: tuple[float, float, float, float], crs: str) -> str:
    """``EXT_POS_LIST`` (lat lon pairs, closed) of a projected box."""
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    l, b, r, t = bounds
    pts = [tr.transform(x, y) for x, y in ((l, t), (r, t), (r, b), (l, b), (l, t))]
    return " ".join(f"{lat} {lon}" for lon, lat in pts) + " "


def _retarget(xml: str, footprint: Optional[str], epsg: Optional[int],
              origin: Optional[tuple[float, float]] = None) -> str:
    if footprint is not None:
        xml = re.sub(r"<EXT_POS_LIST>[^<]*</EXT_POS_LIST>", f"<EXT_POS_LIST>{footprint}</EXT_POS_LIST>", xml, count=1)
    if epsg is not None:
        xml = re.sub(r"<HORIZONTAL_CS_CODE>[^<]*</HORIZONTAL_CS_CODE>",
                     f"<HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>", xml)
    if origin is not None:
        xml = re.sub(r"<ULX>[^<]*</ULX>", f"<ULX>{origin[0]:g}</ULX>", xml)
        xml = re.sub(r"<ULY>[^<]*</ULY>", f"<ULY>{origin[1]:g}</ULY>", xml)
    return xml


def image_files(mtd: str) -> list[str]:
    return re.findall(r"<IMAGE_FILE>([^<]+)</IMAGE_FILE>", mtd)


def zip_product(safe: Path) -> Path:
    """Zip a .SAFE folder as ESA does (the folder at the top of the archive)."""
    out = safe.with_name(safe.name.removesuffix(".SAFE") + ".zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(safe.rglob("*")):
            if p.is_file():
                zf.write(p, f"{safe.name}/{p.relative_to(safe).as_posix()}")
    return out


def rkh_window(px: int = 120, col: int = 300, row: int = 300) -> Window:
    """A window of the 29RKH 10 m bands (stored at 100 m), aligned to the 60 m bands' 600 m pixels."""
    return Window(col, row, px, px)


def build_rkh_l2a(dest: Path, window: Window = rkh_window()) -> Path:
    """An L2A SAFE (baseline 02.14, no offsets: the metadata of a real N0214 product) holding the 12 bands
    and SCL of 29RKH (the tile downsampled 10x) cut to ``window`` of the 100 m grid."""
    name = L2A_N0214.name.removeprefix("esa_")
    safe = dest / name
    mtd = (L2A_N0214 / "MTD_MSIL2A.xml").read_text()
    with rasterio.open(RKH / "B02.tif") as ref:
        box = window_bounds(window, ref.transform)
        crs, origin = ref.crs, (ref.transform.c, ref.transform.f)
    mtd = _retarget(mtd, footprint_text(box, crs.to_string()), None)
    safe.mkdir(parents=True)
    (safe / "MTD_MSIL2A.xml").write_text(mtd)
    shutil.copy(L2A_N0214 / "manifest.safe", safe / "manifest.safe")
    tl = next(L2A_N0214.glob("GRANULE/*/MTD_TL.xml"))
    (safe / "GRANULE" / tl.parent.name).mkdir(parents=True)
    (safe / "GRANULE" / tl.parent.name / "MTD_TL.xml").write_text(_retarget(tl.read_text(), None, crs.to_epsg(), origin))
    for entry in image_files(mtd):
        m = _BAND_RE.search(entry)
        if not m or not (RKH / f"{m.group(1)}.tif").exists():
            continue
        band, res = m.group(1), int(m.group(2))
        if res != {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B01": 60, "B09": 60}.get(band, 20):
            continue  # only the native resolution of each band (the others are the same pixels resampled)
        with rasterio.open(RKH / f"{band}.tif") as src:
            win = src.window(*box).round_offsets().round_lengths()
            write_jp2(safe / f"{entry}.jp2", src.read(window=win), {"crs": src.crs, "transform": src.window_transform(win)})
    return safe


def build_offsets_l1c(dest: Path, name: str) -> Path:
    """An L1C SAFE from the ukis-pysat test vector ``name``: its real MTD_MSIL1C.xml and its 13-band DN
    stack written band by band. The product's cloud mask has no cloud (an all-zero MSK_CLASSI_B00
    from 04.00, a GML without features before), as such products ship for cloud-free tiles."""
    mtd = (OFFSETS / f"{name}_MTD.xml").read_text()
    safe = dest / f"{name}.SAFE"
    safe.mkdir(parents=True)
    (safe / "MTD_MSIL1C.xml").write_text(mtd)
    with rasterio.open(OFFSETS / f"{name}.tif") as src:
        stack, profile = src.read(), src.profile
    granule = None
    for i, entry in enumerate(e for e in image_files(mtd) if _BAND_RE.search(e)):
        write_jp2(safe / f"{entry}.jp2", stack[i:i + 1], profile)
        granule = entry.split("/")[1]
    qi = safe / "GRANULE" / str(granule) / "QI_DATA"
    if "_N04" in name or "_N05" in name:
        with rasterio.open(OFFSETS / f"{name}.tif") as src:
            write_jp2(qi / "MSK_CLASSI_B00.jp2", np.zeros((3, src.height, src.width), np.uint8), src.profile)
    else:
        qi.mkdir(parents=True, exist_ok=True)
        (qi / "MSK_CLOUDS_B00.gml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<eop:Mask xmlns:eop="http://www.opengis.net/eop/2.0" '
            'xmlns:gml="http://www.opengis.net/gml/3.2"><gml:boundedBy><gml:Envelope '
            f'srsName="urn:ogc:def:crs:EPSG:8.7:{profile["crs"].to_epsg()}"/></gml:boundedBy>'
            '<eop:maskMembers/></eop:Mask>\n')
    return safe


def build_mapchete_l1c(dest: Path, item: str = "S2B_33TWL_20230810_0_L2A", px: int = 300) -> Path:
    """An L1C SAFE (the real MTD_MSIL1C.xml of an N0400 product, offsets -1000) holding B02, B03,
    B04, B08 of a mapchete-eo 33TWL date and that granule's real MSK_CLASSI_B00 and MTD_TL.xml,
    cut to the first ``px`` 120 m pixels of the tile (real cloud masks at their real place)."""
    src_dir = MAPCHETE / "sentinel-2-l2a" / item
    mtd = (OFFSETS / f"{L1C_N0400}_MTD.xml").read_text()
    with rasterio.open(src_dir / "B02.tif") as ref:
        box = window_bounds(Window(0, 0, px, px), ref.transform)
        crs = ref.crs
    mtd = _retarget(mtd, footprint_text(box, crs.to_string()), None)
    safe = dest / f"{L1C_N0400}.SAFE"
    safe.mkdir(parents=True)
    (safe / "MTD_MSIL1C.xml").write_text(mtd)
    granule = None
    for entry in image_files(mtd):
        granule = entry.split("/")[1]
        m = _BAND_RE.search(entry)
        if m and (src_dir / f"{m.group(1)}.tif").exists():
            band = m.group(1)
            with rasterio.open(src_dir / f"{band}.tif") as src:
                win = src.window(*box).round_offsets().round_lengths()
                write_jp2(safe / f"{entry}.jp2", src.read(window=win), {"crs": src.crs, "transform": src.window_transform(win)})
    gdir = safe / "GRANULE" / str(granule)
    shutil.copy(src_dir / "granule_metadata.xml", gdir / "MTD_TL.xml")
    classi = next(src_dir.glob("GRANULE/*/QI_DATA/MSK_CLASSI_B00.jp2"))
    with rasterio.open(classi) as src:
        win = src.window(*box).round_offsets().round_lengths()
        write_jp2(gdir / "QI_DATA" / "MSK_CLASSI_B00.jp2", src.read(window=win),
                  {"crs": src.crs, "transform": src.window_transform(win)})
    return safe


UDP = SHARED / "l1c" / "rio-tiler-pds-19UDP-20170729"


def build_udp_l1c(dest: Path) -> Path:
    """A coastal L1C SAFE (St. Lawrence estuary, 19UDP 2017-07-29, the 13 bands of the whole tile at
    900 m) with the real MTD_MSIL1C.xml of an N0209 L1C product (no offsets), its footprint rewritten
    to the tile. It ships no cloud mask file, as a product stripped of QI_DATA would."""
    mtd = (OFFSETS / f"{L1C_N0209}_MTD.xml").read_text()
    with rasterio.open(UDP / "B08.jp2") as ref:
        mtd = _retarget(mtd, footprint_text(tuple(ref.bounds), ref.crs.to_string()), None)
    safe = dest / f"{L1C_N0209}.SAFE"
    safe.mkdir(parents=True)
    (safe / "MTD_MSIL1C.xml").write_text(mtd)
    for entry in image_files(mtd):
        m = _BAND_RE.search(entry)
        if m and (UDP / f"{m.group(1)}.jp2").exists():
            with rasterio.open(UDP / f"{m.group(1)}.jp2") as src:  # GeoTIFFs named .jp2: rewrite as JPEG2000
                write_jp2(safe / f"{entry}.jp2", src.read(), src.profile)
    return safe
