"""s2core.model.request: the one validated request object shared by the CLI, the app and the Python API.

Every parameter's default, bounds and choices live here (the CLI's options and the app's widgets
read them from :class:`PreprocessRequest` and :class:`MaskOptions`). Validation here is pure;
the checks that need installed resources (GDAL drivers, model files) are made by
:func:`s2core.run.request.make_request`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from s2core.model.aoi import AOI, parse_aoi
from s2core.model.bands import ALL_BANDS, L2A_BANDS, normalize_band
from s2core.errors import InvalidDateRange, InvalidParameter, S2CoreError, UnknownBand

#: Default dilation of the merged mask (m): the reference's 5 px at 10 m.
DEFAULT_DILATION_M = 50.0
#: Default cloud heights (m) for the shadow check: low cumulus to the top of the troposphere.
MIN_CLOUD_HEIGHT = 200.0
MAX_CLOUD_HEIGHT = 12_000.0

#: The largest AOI a request accepts by default (km²); the ``S2CORE_MAX_AOI_KM2`` setting overrides it.
DEFAULT_MAX_AOI_KM2 = 2500.0

#: A run id is a folder name: 1..128 of these characters, never ``..`` (the tile server's ids are the same).
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def valid_id(value: str) -> bool:
    """True for a run or acquisition id that is safe as one folder name (:data:`RUN_ID_RE`, no ``..``)."""
    return bool(RUN_ID_RE.fullmatch(value)) and ".." not in value

#: Upsampling kernels (onto a finer grid than the band); ``cubic`` is accepted as ``bicubic``.
Resampling = Literal["nearest", "bilinear", "cubic", "bicubic"]
#: SNAP's upsampling methods.
UpsamplingMethod = Literal["nearest", "bilinear", "bicubic"]
#: SNAP's downsampling methods (onto a coarser grid): nodata-skipping block statistics.
DownsamplingMethod = Literal["first", "min", "max", "mean", "median"]
#: SNAP's flag downsampling methods (class and flag rasters onto a coarser grid).
FlagDownsamplingMethod = Literal["first", "flag_and", "flag_or", "flag_median_and", "flag_median_or"]
UPSAMPLING: tuple[str, ...] = get_args(UpsamplingMethod)
DOWNSAMPLING: tuple[str, ...] = get_args(DownsamplingMethod)
FLAG_DOWNSAMPLING: tuple[str, ...] = get_args(FlagDownsamplingMethod)


class MaskOptions(BaseModel):
    """Cloud/shadow masking options (reference names and defaults where the reference has them).

    ``cloud_model`` may list several models: their cloud probabilities are averaged (an
    ensemble). ``auto`` picks the best built-in model for the requested bands.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cloud_model: tuple[str, ...] = ("auto",)
    shadow_model: str = "auto"
    cloud_thr: Optional[float] = Field(None, ge=0, le=1, description="cloud where probability > this; default: "
                                                                    "the model card's decision (argmax for the U-Nets)")
    shadow_thr: Optional[float] = Field(None, ge=0, le=1, description="shadow where probability > this; default: "
                                                                      "the model card's decision")
    dilation: Optional[int] = Field(None, ge=0, le=100, description="disk radius in output pixels (reference "
                                                                    "closing_size); replaces dilation_m")
    dilation_m: Optional[float] = Field(None, ge=0, le=2000, description=f"disk radius in metres (default "
                                                                         f"{DEFAULT_DILATION_M:g} m)")
    min_area: Optional[int] = Field(None, ge=0, description="remove masked regions / fill holes smaller than this "
                                                            "(px); replaces min_area_m2")
    min_area_m2: Optional[float] = Field(None, ge=0, le=1e8, description="the same in square metres (default 0: off)")
    shadow_check: Literal["filter", "off"] = Field(
        "filter", description="filter: shadow pixels no cloud can cast under the acquisition's sun become clear; "
                              "off: the reference's behaviour")
    min_cloud_height: float = Field(MIN_CLOUD_HEIGHT, ge=0, le=100_000, description="m, for shadow_check")
    max_cloud_height: float = Field(MAX_CLOUD_HEIGHT, ge=0, le=100_000, description="m, for shadow_check")
    use_product_mask: bool = True
    in_memory: bool = Field(False, description="whole raster in memory for inference (faster, more memory)")
    inference_resolution: Optional[float] = Field(
        None, gt=0, le=1000, description="metres; default: each model's native resolution")
    binary_mask: bool = Field(False, description="also write the reference's binary cloud_mask.tif")
    batch_size: int = Field(1, ge=1, le=256)
    patch_size: Optional[int] = Field(None, ge=32, le=4096)

    @field_validator("cloud_model", mode="before")
    @classmethod
    def _split_models(cls, v: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [m for m in (p.strip() for p in v.split(",")) if m]
        v = tuple(str(m).strip() for m in v)
        if not v:
            raise InvalidParameter("cloud_model is empty: give a model name or 'auto'.")
        return v

    @model_validator(mode="after")
    def _one_unit_each(self) -> "MaskOptions":
        for px, metres in (("dilation", "dilation_m"), ("min_area", "min_area_m2")):
            if getattr(self, px) is not None and getattr(self, metres) is not None:
                raise InvalidParameter(f"Give {px} (pixels) or {metres} (metres), not both.")
        if self.min_cloud_height > self.max_cloud_height:
            raise InvalidParameter(
                f"min_cloud_height {self.min_cloud_height:g} m is above max_cloud_height {self.max_cloud_height:g} m: "
                "swap them (defaults 200 and 12000).")
        return self

    def dilation_px(self, pixel_size: float) -> int:
        """The dilation radius in pixels of ``pixel_size`` metres (``dilation``, else ``dilation_m`` rounded)."""
        if self.dilation is not None:
            return self.dilation
        metres = DEFAULT_DILATION_M if self.dilation_m is None else self.dilation_m
        return int(math.floor(metres / pixel_size + 0.5))

    def min_area_px(self, pixel_size: float) -> int:
        """The minimum region size in pixels of ``pixel_size`` metres (``min_area``, else ``min_area_m2``)."""
        if self.min_area is not None:
            return self.min_area
        return int(math.floor((self.min_area_m2 or 0.0) / (pixel_size * pixel_size) + 0.5))


class PreprocessRequest(BaseModel):
    """Everything a preprocessing run needs. Build it with :func:`make_request` for clear errors.

    Parameter names follow the reference workflow (``min_tile_cover``, ``max_tiles_per_time``,
    ``pc_key``, ``dl_timeout``). ``pc_key`` is a :class:`~pydantic.SecretStr`: it never appears in
    ``repr``, logs, manifests or outputs.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid", allow_inf_nan=False)

    aoi: AOI
    start: dt.date
    end: dt.date
    catalog: str = Field("pc", description="'pc', 'earth-search', a STAC API URL or a local catalog path")
    input: tuple[str, ...] = Field((), description="local SAFE products (.SAFE folders, .zip, or folders of them); "
                                                   "replaces the catalog when given")
    level: Literal["L2A", "L1C"] = Field("L2A", description="product level (L1C only with SAFE input)")
    collection: Optional[str] = Field(None, description="STAC collection id (default: sentinel-2-l2a)")
    out_dir: Path = Field(Path("runs"), description="Output root; each run writes OUT_DIR/<run_id>/")
    run_id: Optional[str] = None
    bands: tuple[str, ...] = L2A_BANDS
    resolution: float = Field(10.0, gt=0, le=1000)
    upsampling: Resampling = Field("bilinear", description="finer grid than the band: nearest, bilinear, bicubic")
    downsampling: DownsamplingMethod = Field("mean", description="coarser grid: first, min, max, mean, median")
    flag_downsampling: FlagDownsamplingMethod = Field(
        "first", description="class/flag rasters on a coarser grid: first, flag_and, flag_or, flag_median_and/or")
    crs: Optional[str] = Field(None, description="Output CRS (EPSG code, PROJ or WKT); default UTM of the AOI")
    output_format: str = Field("COG", description="COG (default), GTiff, or any GDAL raster driver that can write "
                                                   "(ENVI, HFA, netCDF, ...): adds raster.<ext> beside the COGs")
    grid_origin: Optional[tuple[float, float]] = Field(
        None, description="snap the output grid to origin + k*resolution (CRS units) instead of multiples of it")
    min_tile_cover: float = Field(0.99, gt=0, le=1)
    max_tiles_per_time: Optional[int] = Field(None, ge=1)
    max_cloud_cover: Optional[float] = Field(None, ge=0, le=100)
    pc_key: Optional[SecretStr] = None
    dl_timeout: float = Field(120.0, gt=0, le=86400, description="seconds for reading one asset, retries included")
    search_timeout: float = Field(60.0, gt=0, le=3600, description="seconds for the whole STAC search, retries "
                                                                   "and pages included")
    max_retries: int = Field(3, ge=0, le=10)
    read_workers: int = Field(8, ge=1, le=64)
    max_aoi_km2: float = Field(DEFAULT_MAX_AOI_KM2, gt=0, le=1e7)
    restricted: bool = Field(False, description="apply the deployment's access policy to catalogs and assets "
                                                "(s2core.settings; the app sets it)")
    owner: Optional[str] = Field(None, max_length=200, description="who started the run, recorded in the manifest "
                                                                   "(the app: the user its reverse proxy names, "
                                                                   "else the browser session)")
    masks: Optional[MaskOptions] = Field(None, description="cloud/shadow masking (None: preprocessing only)")
    land_sea_mask: Literal["none", "land", "sea"] = Field(
        "none", description="set land (land) or sea (sea) pixels to NoData: 1 km global land mask, coast refined "
                            "with SCL water")
    cloud_mask: Literal["none", "product", "model", "merged"] = Field(
        "none", description="set cloud/shadow pixels of the raster to NoData: by the product mask, the model "
                            "probabilities, or the merged mask (model and merged need masks)")

    @field_validator("aoi", mode="before")
    @classmethod
    def _parse_aoi(cls, v: Any) -> AOI:
        return parse_aoi(v)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse_date(cls, v: Any) -> dt.date:
        if isinstance(v, dt.datetime):
            return v.date()
        if isinstance(v, dt.date):
            return v
        try:
            return dt.date.fromisoformat(str(v).strip())
        except ValueError as exc:
            raise InvalidDateRange(f"Date {v!r} is not YYYY-MM-DD.") from exc

    @field_validator("bands", mode="before")
    @classmethod
    def _parse_bands(cls, v: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [b for b in v.replace(" ", ",").split(",") if b]
        out: list[str] = []
        unknown: list[str] = []
        for b in v:
            try:
                canon = normalize_band(str(b))
            except KeyError:
                unknown.append(str(b))
                continue
            if canon in out:
                raise UnknownBand(f"Band {canon} is listed twice ({', '.join(map(str, v))}): list each band once.")
            out.append(canon)
        if unknown:
            raise UnknownBand(
                f"Unknown band(s) {', '.join(unknown)}: choose from {', '.join(ALL_BANDS)} "
                "(Earth Search names such as 'red' or 'nir' work too)."
            )
        if not out:
            raise UnknownBand(f"No band requested: choose from {', '.join(L2A_BANDS)}.")
        return tuple(out)

    @field_validator("crs", mode="before")
    @classmethod
    def _check_crs(cls, v: Any) -> Optional[str]:
        if v in (None, ""):
            return None
        text = str(v).strip()
        if text.isdigit():
            text = f"EPSG:{text}"
        try:
            crs = CRS.from_user_input(text)
        except CRSError as exc:
            raise InvalidParameter(f"Output CRS {v!r} is not a CRS: use e.g. 'EPSG:32633', a PROJ string or WKT.") from exc
        if crs.is_geographic is False and crs.axis_info and crs.axis_info[0].unit_name not in ("metre", "meter", "m"):
            raise InvalidParameter(f"Output CRS {v!r} does not use metres: pick a projected CRS in metres.")
        return text

    @field_validator("input", mode="before")
    @classmethod
    def _parse_input(cls, v: Any) -> tuple[str, ...]:
        if v in (None, ""):
            return ()
        items = [v] if isinstance(v, (str, Path)) else list(v)
        return tuple(str(Path(str(p)).expanduser()) for p in items)

    @field_validator("run_id", mode="before")
    @classmethod
    def _check_run_id(cls, v: Any) -> Optional[str]:
        if v in (None, ""):
            return None
        text = str(v)
        if not valid_id(text):
            raise InvalidParameter(
                f"run_id {text[:40]!r}{'…' if len(text) > 40 else ''} cannot be a folder name: use 1 to 128 letters, "
                "digits, '_', '.' or '-', starting with a letter or digit (no '/', no '..')."
            )
        return text

    @field_validator("catalog", mode="before")
    @classmethod
    def _check_catalog(cls, v: Any) -> str:
        text = str(v or "").strip()
        if not text:
            raise InvalidParameter("No catalog given: use 'pc', 'earth-search', a STAC API URL or a catalog path.")
        return text

    @model_validator(mode="after")
    def _check_dates_and_grid(self) -> "PreprocessRequest":
        if self.end < self.start:
            raise InvalidDateRange(
                f"The end date {self.end} is before the start date {self.start}: swap them or pick a later end."
            )
        if "B10" in self.bands and self.level != "L1C":
            raise UnknownBand("B10 exists only in L1C products: drop it from 'bands' (or give L1C SAFE input).")
        if self.level == "L1C" and not self.input:
            raise InvalidParameter("level='L1C' needs SAFE input (catalogs serve L2A): give input=[...] products.")
        if self.aoi.area_km2 > self.max_aoi_km2:
            parse_aoi(self.aoi, max_km2=self.max_aoi_km2)  # raises AOITooLarge with the message
        if self.cloud_mask in ("model", "merged") and self.masks is None:
            raise InvalidParameter(
                f"cloud_mask={self.cloud_mask!r} needs the cloud/shadow models: use `run` (or pass masks=...), "
                "or cloud_mask='product' for the product mask alone."
            )
        return self

    @property
    def output_crs(self) -> CRS:
        """The CRS of the output grid (the AOI's UTM zone unless ``crs`` is set)."""
        return CRS.from_user_input(self.crs) if self.crs else self.aoi.utm_crs

    def public_params(self) -> dict[str, Any]:
        """Parameters safe to log and store (no secrets), JSON-serialisable."""
        data = self.model_dump(mode="json", exclude={"aoi", "pc_key"})
        if not self.input:
            data.pop("input")
        data["aoi"] = self.aoi.to_geojson()
        data["pc_key_given"] = self.pc_key is not None
        return data


def parse_request(**kwargs: Any) -> PreprocessRequest:
    """Build a :class:`PreprocessRequest`, turning validation failures into one precise
    :class:`~s2core.errors.S2CoreError` (the original one when a validator raised it).

    Use :func:`s2core.make_request`, which also checks the output driver and the models.
    """
    try:
        return PreprocessRequest(**kwargs)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            original = (err.get("ctx") or {}).get("error")
            if isinstance(original, S2CoreError):
                raise original from None
            field = ".".join(str(p) for p in err.get("loc", ())) or "request"
            got = err.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            if field == "pc_key":
                got_s = ""
            problems.append(f"{field}: {err.get('msg')}{got_s}")
        raise InvalidParameter("Invalid parameter — " + "; ".join(problems)) from None


def field_default(name: str, model: type[BaseModel] = PreprocessRequest) -> Any:
    """The default of a request field (``model``: :class:`PreprocessRequest` or :class:`MaskOptions`):
    the CLI's options and the app's widgets take their defaults from here."""
    return model.model_fields[name].default


def field_choices(name: str, model: type[BaseModel] = PreprocessRequest) -> list[str]:
    """The allowed values of a ``Literal`` request field, its default first (for menus)."""
    values = list(get_args(model.model_fields[name].annotation))
    default = model.model_fields[name].default
    return sorted(values, key=lambda v: v != default)
