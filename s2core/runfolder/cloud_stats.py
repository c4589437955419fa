"""s2core.runfolder.cloud_stats: cloud statistics over the AOI, per date — what ``python -m s2core stats`` prints.

Figures come from the run's manifest (the masks stage counts the AOI's pixels, not the tile's, nor the
AOI's bounding box's): for each completed acquisition the share of the AOI that is clear, cloud, shadow,
snow, defective or without data (they add up to 1), from the merged mask when the run had masks, else
from the product mask. Dates are ranked by clear share, the usable dates first. For a batch (one run per
field) :func:`clear_table` gives the fields × dates table of clear shares.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from s2core.model.classes import MASK_CLASSES, NODATA
from s2core.runfolder.listing import run_folders
from s2core.runfolder.manifest import MANIFEST_NAME, load_manifest

#: The classes reported, in order (shares of the AOI).
CLASS_NAMES: tuple[str, ...] = tuple(name for code, name in MASK_CLASSES.items() if code != NODATA) + ("nodata",)


@dataclass(frozen=True)
class DateStats:
    """One acquisition's shares of the AOI (0..1) and where they come from."""

    run_id: str
    acquisition: str
    date: str
    source: str  # "merged mask" or "product mask"
    clear: float
    cloud: float
    shadow: float
    snow: float
    defective: float
    nodata: float


def run_stats(run_dir: Path) -> list[DateStats]:
    """The completed acquisitions of one run, clearest first (ties: earlier date first)."""
    manifest = load_manifest(Path(run_dir))
    out = []
    for a in manifest.acquisitions:
        if a.status != "completed":
            continue
        fractions, source = (a.mask_fractions, "merged mask") if a.mask_fractions else \
            (a.product_mask_fractions, "product mask")
        nodata = float(fractions.get("nodata", 0.0))
        share = {name: round(float(fractions.get(name, 0.0)) * (1.0 - nodata), 6) for name in CLASS_NAMES[:-1]}
        out.append(DateStats(manifest.run_id, a.id, a.datetime[:10], source, **share, nodata=round(nodata, 6)))
    return sorted(out, key=lambda s: (-s.clear, s.date))


def runs_of(path: Path) -> list[Path]:
    """``path`` when it is a run folder, else the run folders directly under it (a batch's output root)."""
    path = Path(path)
    return [path] if (path / MANIFEST_NAME).is_file() else run_folders(path)


def clear_table(stats: Sequence[DateStats]) -> tuple[list[str], dict[str, dict[str, Optional[float]]]]:
    """(dates, run id -> date -> clear share or None): the fields × dates table of a batch."""
    dates = sorted({s.date for s in stats})
    table: dict[str, dict[str, Optional[float]]] = {}
    for s in stats:
        row = table.setdefault(s.run_id, {d: None for d in dates})
        row[s.date] = max(s.clear, row[s.date] or 0.0)  # two passes on one day: the clearer one
    return dates, table


def to_csv(stats: Sequence[DateStats]) -> str:
    """One CSV row per acquisition (shares of the AOI, 0..1)."""
    buf = io.StringIO()
    fields = list(DateStats.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for s in stats:
        writer.writerow(asdict(s))
    return buf.getvalue()


def to_json(stats: Sequence[DateStats]) -> str:
    """The same as JSON: a list of objects, plus the fields × dates table when there are several runs."""
    doc: dict[str, object] = {"dates": [asdict(s) for s in stats]}
    if len({s.run_id for s in stats}) > 1:
        dates, table = clear_table(stats)
        doc["clear_by_run"] = {"dates": dates, "runs": table}
    return json.dumps(doc, indent=1)


def to_text(stats: Sequence[DateStats]) -> str:
    """The ranked table, percentages of the AOI, and the fields × dates table for several runs."""
    lines = []
    runs = list(dict.fromkeys(s.run_id for s in stats))
    for run_id in runs:
        mine = [s for s in stats if s.run_id == run_id]
        lines.append(f"Run {run_id}: {len(mine)} date(s), clearest first (% of the AOI, from the {mine[0].source})")
        lines.append(f"  {'date':<10}  {'clear':>6}  {'cloud':>6}  {'shadow':>6}  {'snow':>6}  {'nodata':>6}  acquisition")
        for s in mine:
            lines.append(f"  {s.date:<10}  {s.clear:6.1%}  {s.cloud:6.1%}  {s.shadow:6.1%}  {s.snow:6.1%}  "
                         f"{s.nodata:6.1%}  {s.acquisition}")
    if len(runs) > 1:
        dates, table = clear_table(stats)
        width = max(len(r) for r in runs)
        lines.append("")
        lines.append("Clear share of each field's AOI by date:")
        lines.append(f"  {'run':<{width}}  " + "  ".join(f"{d:>10}" for d in dates))
        for run_id in runs:
            cells = ("         -" if v is None else f"{v:10.1%}" for v in table[run_id].values())
            lines.append(f"  {run_id:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
