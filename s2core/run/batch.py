"""s2core.run.batch: many AOIs (one run per feature of a FeatureCollection) planned as one task graph."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from s2core.errors import Cancelled, InvalidAOI, S2CoreError
from s2core.model.request import PreprocessRequest
from s2core.planner import open_request_catalog
from s2core.progress import CancelToken, ProgressCallback, null_progress, scaled
from s2core.run.preprocess import preprocess, run_on_scheduler
from s2core.run.recorder import RunState
from s2core.run.request import complete_request
from s2core.runfolder.manifest import Manifest
from s2core.search.catalog import Catalog


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one run of a batch: its manifest, or why it could not start."""

    name: str
    run_id: str
    manifest: Optional[Manifest]
    error: Optional[str]


def _safe_name(value: Any, index: int) -> str:
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(value)).strip("-.")[:60]
    return text or f"feature-{index}"


def split_features(value: Any) -> list[tuple[str, Any]]:
    """``(name, geometry)`` per feature of a GeoJSON FeatureCollection (dict, JSON text or file).

    The name is the feature's ``id``, else its ``name`` property, else ``feature-<n>``.
    """
    if isinstance(value, (str, Path)) and len(str(value)) < 4096 and Path(str(value)).is_file():
        path = Path(str(value))
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise InvalidAOI(f"{path.name}: a batch needs a GeoJSON FeatureCollection file (lon/lat).") from None
    elif isinstance(value, Path) or (isinstance(value, str) and value.strip().lower().endswith((".geojson", ".json"))):
        raise InvalidAOI(f"Batch AOI file {str(value)!r} does not exist: check the path.")
    elif isinstance(value, str):
        try:
            doc = json.loads(value)
        except ValueError:
            raise InvalidAOI("A batch needs a GeoJSON FeatureCollection (file or text).") from None
    else:
        doc = value
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not doc.get("features"):
        raise InvalidAOI("A batch needs a GeoJSON FeatureCollection with at least one feature.")
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for i, feat in enumerate(doc["features"], start=1):
        props = feat.get("properties") or {}
        name = _safe_name(feat.get("id") or props.get("name") or props.get("id") or f"feature-{i}", i)
        while name in seen:
            name = f"{name}-{i}"
        seen.add(name)
        out.append((name, feat.get("geometry")))
    return out


def preprocess_batch(
    requests: list[PreprocessRequest],
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    catalog: Optional[Catalog] = None,
    *,
    scheduler: "str | object | None" = None,
    workers: int = 2,
) -> list[BatchResult]:
    """Run several requests. With a ``scheduler`` every acquisition of every run is one task of a
    single graph (runs overlap on the cluster); without one, runs go one after the other.

    A run that cannot start (e.g. no acquisition covers its AOI) is reported with its error; the
    others go on. Cancellation stops all of them.
    """
    emit = progress or null_progress
    cancel = cancel or CancelToken()
    if scheduler is None:
        results: list[BatchResult] = []
        n = len(requests)
        for k, req in enumerate(requests):
            prefix = f"[{k + 1}/{n}] " if n > 1 else ""
            try:
                m = preprocess(req, progress=scaled(emit, k / n, (k + 1) / n, prefix), cancel=cancel, catalog=catalog)
                results.append(BatchResult(req.run_id or m.run_id, m.run_id, m, m.error))
            except Cancelled:
                raise
            except S2CoreError as exc:
                results.append(BatchResult(req.run_id or "?", req.run_id or "?", None, str(exc)))
        return results

    slots: list[Optional[BatchResult]] = [None] * len(requests)
    runs: list[RunState] = []
    where: list[int] = []
    for i, req in enumerate(requests):
        try:
            req = complete_request(req)
            runs.append(RunState(req, catalog or open_request_catalog(req), emit).start())
            where.append(i)
        except S2CoreError as exc:
            slots[i] = BatchResult(req.run_id or "?", req.run_id or "?", None, str(exc))
    if runs:
        try:
            run_on_scheduler(runs, cancel, emit, scheduler, workers)
        except Cancelled as exc:
            for run in runs:
                run.cancelled(exc)
            raise
        except BaseException as exc:
            for run in runs:
                run.aborted(exc)
            raise
    for i, run in zip(where, runs):
        m = run.finish(raise_errors=False)
        slots[i] = BatchResult(m.run_id, m.run_id, m, m.error)
    return [r for r in slots if r is not None]
