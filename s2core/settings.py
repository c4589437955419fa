"""s2core.settings: every environment setting of s2core and the app, in one place.

Settings are read from the environment each time :func:`get_settings` is called, so a test or a Dask worker that sets a
variable sees it. The README's settings table lists the same names.

Example:
    >>> from s2core.settings import get_settings
    >>> get_settings().max_aoi_km2 > 0
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from s2core.errors import InvalidSetting
from s2core.model.policy import DEFAULT_ASSET_HOSTS, DEFAULT_STAC_HOSTS, AccessPolicy


class Settings(BaseSettings):
    """Environment settings (names in the field aliases)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # --- s2core --------------------------------------------------------------------------
    threads: Optional[int] = Field(None, ge=1, validation_alias="S2CORE_THREADS",
                                   description="threads for ONNX Runtime and GDAL (default: the cores this process may use)")
    engine: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto", validation_alias="S2CORE_ENGINE",
        description="inference engine of the patch models: auto = OpenVINO on a CPU when installed, else ONNX Runtime "
                    "(CUDA when offered)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", validation_alias="S2CORE_PRECISION",
        description="OpenVINO's arithmetic: auto = bf16 where the CPU has it, else fp32 (ONNX Runtime: always fp32)")
    max_aoi_km2: float = Field(2500.0, gt=0, validation_alias="S2CORE_MAX_AOI_KM2",
                               description="largest AOI a request accepts (km²)")
    worker_memory: str = Field("4GiB", validation_alias="S2CORE_WORKER_MEMORY",
                               description="memory limit of each LocalCluster worker")
    models_dir: Optional[Path] = Field(None, validation_alias="S2CORE_MODELS_DIR",
                                       description="folder of model cards and ONNX files (default: models/)")
    pc_key: Optional[SecretStr] = Field(None, validation_alias=AliasChoices("PC_SDK_SUBSCRIPTION_KEY"),
                                        description="Planetary Computer key for the CLI (never logged)")
    # --- access policy of restricted runs (the app) ---------------------------------------
    allowed_stac_hosts: str = Field(",".join(DEFAULT_STAC_HOSTS), validation_alias="S2_ALLOWED_STAC_HOSTS",
                                    description="comma-separated STAC API hosts the app may search (* wildcards)")
    allowed_asset_hosts: str = Field(",".join(DEFAULT_ASSET_HOSTS), validation_alias="S2_ALLOWED_ASSET_HOSTS",
                                     description="comma-separated hosts the app may read assets from (* wildcards)")
    catalog_roots: str = Field("", validation_alias="S2_CATALOG_ROOTS",
                               description="folders (separated by the OS path separator) under which the app may "
                                           "read local catalogs, SAFE products and their assets; empty: none")

    def access_policy(self, restricted: bool) -> AccessPolicy:
        """The access policy of a run: everything for the CLI and the Python API, these settings for the app."""
        if not restricted:
            return AccessPolicy()
        split = [h.strip() for h in self.allowed_stac_hosts.split(",") if h.strip()]
        assets = [h.strip() for h in self.allowed_asset_hosts.split(",") if h.strip()]
        roots = [Path(r).expanduser() for r in self.catalog_roots.split(os.pathsep) if r.strip()]
        return AccessPolicy(True, tuple(split), tuple(assets), tuple(roots))

    # --- the app -------------------------------------------------------------------------
    runs_dir: Path = Field(Path("runs"), validation_alias="S2_RUNS_DIR", description="where runs are written and listed")
    tiles_url: Optional[str] = Field(None, validation_alias="S2_TILES_URL",
                                     description="use the tile server at this URL instead of the app's own (/tiles)")
    basemap_url: str = Field("https://tile.openstreetmap.org/{z}/{x}/{y}.png", validation_alias="S2_BASEMAP_URL",
                             description="XYZ URL template of the maps' basemap, or 'none'")
    basemap_attribution: str = Field("© OpenStreetMap contributors", validation_alias="S2_BASEMAP_ATTRIBUTION",
                                     description="the basemap's attribution")
    user_header: Optional[str] = Field(None, validation_alias="S2_USER_HEADER",
                                       description="request header naming the user, set by an authenticating "
                                                   "reverse proxy (e.g. X-Forwarded-User): recorded as a run's owner")
    confirm_pixels: int = Field(400_000_000, ge=1, validation_alias="S2_CONFIRM_PIXELS",
                                description="the app asks for a confirmation above this many output pixels per run")


def get_settings() -> Settings:
    """The settings as the environment says now.

    Raises:
        InvalidSetting: a variable's value cannot be used (the message names it and what it needs).
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err.get("loc", ())) or "a setting"
            shown = "(hidden)" if "KEY" in name.upper() else repr(err.get("input"))
            problems.append(f"{name}={shown}: {err.get('msg')}")
        raise InvalidSetting("Invalid environment setting " + "; ".join(problems)
                             + ": fix the variable or unset it (README lists the settings).") from None


def cpu_count() -> int:
    """Cores this process may use (affinity-aware), or ``S2CORE_THREADS`` when set (Dask workers set it
    to their thread count so that worker processes do not oversubscribe the machine)."""
    threads = get_settings().threads
    if threads:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
