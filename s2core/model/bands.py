"""s2core.model.bands: Sentinel-2 band names, asset-key aliases, native resolutions, descriptions."""

from __future__ import annotations

from typing import Mapping

#: The 12 L2A spectral bands in the reference (FarmVibes) order.
L2A_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
)
#: All MSI bands (B10 exists only in L1C products).
ALL_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)

#: Native pixel size in metres.
NATIVE_RESOLUTION: Mapping[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20, "SCL": 20,
}

#: Earth Search v1 asset keys (common names) for each band.
EARTH_SEARCH_KEYS: Mapping[str, str] = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B10": "cirrus", "B11": "swir16", "B12": "swir22", "SCL": "scl",
}

DESCRIPTIONS: Mapping[str, str] = {
    "B01": "B01 coastal aerosol 443 nm", "B02": "B02 blue 490 nm", "B03": "B03 green 560 nm",
    "B04": "B04 red 665 nm", "B05": "B05 red edge 1 705 nm", "B06": "B06 red edge 2 740 nm",
    "B07": "B07 red edge 3 783 nm", "B08": "B08 NIR 842 nm", "B8A": "B8A narrow NIR 865 nm",
    "B09": "B09 water vapour 945 nm", "B10": "B10 SWIR cirrus 1375 nm",
    "B11": "B11 SWIR 1610 nm", "B12": "B12 SWIR 2190 nm",
}

CENTER_WAVELENGTH_UM: Mapping[str, float] = {
    "B01": 0.443, "B02": 0.490, "B03": 0.560, "B04": 0.665, "B05": 0.705, "B06": 0.740,
    "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B10": 1.375, "B11": 1.610,
    "B12": 2.190,
}


def normalize_band(name: str) -> str:
    """Return the canonical band name (``"b8a"``, ``"8A"``, ``"B8"``, ``"nir"`` → ``B8A``/``B08``).

    Raises:
        KeyError: when ``name`` is not a Sentinel-2 band.
    """
    raw = name.strip()
    up = raw.upper()
    for canon, es in EARTH_SEARCH_KEYS.items():
        if raw.lower() == es:
            return canon
    if not up.startswith("B"):
        up = "B" + up
    if up == "B8A":
        return "B8A"
    digits = up[1:]
    if digits.isdigit():
        up = f"B{int(digits):02d}"
    if up in ALL_BANDS:
        return up
    raise KeyError(name)


def asset_key_candidates(band: str) -> list[str]:
    """Asset keys that may hold ``band`` in PC, Earth Search and other catalogs, best first."""
    keys = [band, band.lower(), EARTH_SEARCH_KEYS.get(band, band)]
    if band.startswith("B") and band != "B8A":
        keys.append("B" + str(int(band[1:])))  # B2, B8 (some catalogs)
    return list(dict.fromkeys(keys))
