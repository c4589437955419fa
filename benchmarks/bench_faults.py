"""Benchmark: what each fault of an asset server does to a run — outcome, wall time against dl_timeout,
requests the server saw, bytes left on disk.

The five mapchete-eo dates are rewritten as COGs and served by the fault-injecting server of the tests
(``tests/servers.py`` FaultServer) on loopback; each row runs ``preprocess`` (4 bands, a 10 × 10 km AOI,
two acquisitions) through a local catalog whose hrefs point at one fault mode.

Run: ``python benchmarks/bench_faults.py [--dl-timeout 10]`` (needs ../shared/data). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2core import make_request, preprocess  # noqa: E402
from s2core.errors import S2CoreError  # noqa: E402
from tests.conftest import INSIDE_TWM_WKT, LOCAL_BANDS, MAPCHETE_CATALOG, items_served_from, write_cogs  # noqa: E402
from tests.servers import FaultServer  # noqa: E402

MODES = ("ok", "once503", "half500", "once403", "retry429", "all503", "truncated", "corrupt", "html", "drip", "stall")


def _bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    return sum(p.stat().st_size for p in files), sum(1 for p in files if p.name.endswith(".part"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dl-timeout", type=float, default=10.0)
    args = ap.parse_args()
    logging.getLogger("s2core").setLevel(logging.CRITICAL)  # the table says what happened
    if not MAPCHETE_CATALOG.exists():
        print(f"needs the shared test data ({MAPCHETE_CATALOG} is missing)")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "cogs").mkdir()
        write_cogs(tmp_path / "cogs")
        rows = []
        with FaultServer(tmp_path / "cogs") as server:
            for mode in MODES:
                catalog = tmp_path / f"catalog-{mode}"
                catalog.mkdir()
                for item in items_served_from(server.url, prefix=mode):
                    if "2023-08-13" <= item["properties"]["datetime"][:10] <= "2023-08-15":
                        (catalog / f"{item['id']}.json").write_text(json.dumps(item))
                req = make_request(aoi=INSIDE_TWM_WKT, start="2023-08-13", end="2023-08-15", catalog=str(catalog),
                                   bands=",".join(LOCAL_BANDS), out_dir=tmp_path / "out", run_id=mode,
                                   dl_timeout=args.dl_timeout)
                before = server.seen(mode)
                t0 = time.monotonic()
                try:
                    m = preprocess(req)
                    outcome = f"{m.status} ({sum(a.status == 'completed' for a in m.acquisitions)}/2 written)"
                except S2CoreError as exc:
                    text = re.sub(r"https?://\S+", "<url>", str(exc))
                    text = re.sub(r"^(Cannot read|Reading) \S+ of \S+ ", "", text)
                    outcome = f"{type(exc).__name__}: {text[:120]}"
                wall = time.monotonic() - t0
                size, parts = _bytes(tmp_path / "out" / mode)
                statuses = sorted({s for s in server.statuses.get(mode, []) if s >= 400})
                rows.append((mode, outcome, wall, server.seen(mode) - before, statuses, size, parts))
    print(f"dl_timeout = {args.dl_timeout:g} s per asset; two acquisitions of 5 assets each\n")
    print("| fault | outcome | wall s (÷ dl_timeout) | requests | error statuses sent | bytes on disk | .part left |")
    print("|---|---|---|---|---|---|---|")
    for mode, outcome, wall, n, statuses, size, parts in rows:
        print(f"| {mode} | {outcome} | {wall:.1f} ({wall / args.dl_timeout:.2f}) | {n} | "
              f"{', '.join(map(str, statuses)) or '—'} | {size:,} | {parts} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
