"""s2core.runfolder.manifest: the record of a run (``manifest.json`` in the run folder), its name and run ids."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

from s2core.runfolder.atomic import write_json

#: The file name of a run's manifest, in the run folder.
MANIFEST_NAME = "manifest.json"

RunStatus = Literal["running", "completed", "partial", "failed", "cancelled", "interrupted"]


class AcquisitionRecord(BaseModel):
    """One processed (or failed) acquisition."""

    id: str
    datetime: str
    status: Literal["completed", "failed"]
    items: list[str]
    tiles: list[str] = Field(default_factory=list)
    coverage: Optional[float] = None
    valid_fraction: Optional[float] = None
    product_mask_fractions: dict[str, float] = Field(default_factory=dict)
    mask_fractions: dict[str, float] = Field(default_factory=dict, description="merged mask classes (masks run)")
    models: dict[str, dict[str, Any]] = Field(default_factory=dict, description="models run and their figures")
    merge: dict[str, Any] = Field(default_factory=dict, description="the decision, dilation and shadow check used")
    warnings: list[str] = Field(default_factory=list, description="what the user should know about these masks")
    outputs: dict[str, str] = Field(default_factory=dict, description="role -> path relative to the run folder")
    cloud_nodata_fraction: Optional[float] = Field(None, description="share of valid pixels set to NoData (cloud_mask)")
    error: Optional[str] = None
    seconds: Optional[float] = None


class SkippedRecord(BaseModel):
    """An acquisition that was not processed, with the reason."""

    date: str
    acquisition_id: str
    reason: str
    coverage: Optional[float] = None
    items: list[str] = Field(default_factory=list)


class Manifest(BaseModel):
    """Everything a run produced and how. Written atomically after every acquisition."""

    run_id: str
    status: RunStatus
    created: str
    finished: Optional[str] = None
    catalog: str
    parameters: dict[str, Any]
    grid: dict[str, Any]
    acquisitions: list[AcquisitionRecord] = Field(default_factory=list)
    skipped: list[SkippedRecord] = Field(default_factory=list)
    items_found: int = 0
    versions: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    bytes_read: Optional[int] = None
    http_requests: Optional[int] = None
    error: Optional[str] = None
    resumed: list[str] = Field(default_factory=list, description="acquisitions kept from an earlier run of this id")

    def output_path(self, acquisition_id: str, role: str) -> Optional[str]:
        """The relative path of one output, if it exists."""
        for acq in self.acquisitions:
            if acq.id == acquisition_id:
                return acq.outputs.get(role)
        return None


def now_iso() -> str:
    """The current UTC time as ISO 8601 seconds with ``Z``."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261121T101500Z-3f9a1c``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def load_manifest(run_dir: Path) -> Manifest:
    """Read a run's manifest."""
    return Manifest.model_validate_json((Path(run_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))


def save_manifest(run_dir: Path, manifest: Manifest) -> Path:
    """Write a run's manifest atomically."""
    return write_json(Path(run_dir) / MANIFEST_NAME, manifest.model_dump(mode="json"))
