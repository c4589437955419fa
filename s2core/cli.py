"""s2core.cli: ``python -m s2core preprocess ...`` — the headless command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from s2core.bands import L2A_BANDS
from s2core.errors import Cancelled, S2CoreError
from s2core.progress import CancelToken, ProgressEvent
from s2core.request import DEFAULT_MAX_AOI_KM2, make_request

log = logging.getLogger("s2core")


def _add_preprocess_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aoi", required=True, help="AOI: vector file path (GeoJSON/GPKG/SHP), GeoJSON string or WKT")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date (inclusive), YYYY-MM-DD")
    p.add_argument("--catalog", default="pc", help="pc (default), earth-search, a STAC API URL, or a local catalog path")
    p.add_argument("--collection", default=None, help="STAC collection (default sentinel-2-l2a)")
    p.add_argument("--out", default="runs", help="output root; the run is written to OUT/<run_id>/ (default: runs)")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: timestamp + random suffix)")
    p.add_argument("--bands", default=",".join(L2A_BANDS), help="comma-separated bands (default: the 12 L2A bands)")
    p.add_argument("--resolution", type=float, default=10.0, help="output pixel size in metres (default 10)")
    p.add_argument("--upsampling", default="bilinear", choices=["nearest", "bilinear", "cubic"])
    p.add_argument("--crs", default=None, help="output CRS (default: UTM zone of the AOI)")
    p.add_argument("--min-tile-cover", type=float, default=0.99, help="minimum AOI fraction a pass must cover (default 0.99)")
    p.add_argument("--max-tiles-per-time", type=int, default=None, help="most tiles per pass (default: no limit)")
    p.add_argument("--max-cloud-cover", type=float, default=None, help="skip items above this eo:cloud_cover (percent)")
    p.add_argument("--dl-timeout", type=float, default=120.0, help="seconds allowed for reading one asset, retries included")
    p.add_argument("--max-retries", type=int, default=3, help="retries of a failing read (default 3)")
    p.add_argument("--read-workers", type=int, default=8, help="parallel asset reads (default 8)")
    p.add_argument("--max-aoi-km2", type=float, default=DEFAULT_MAX_AOI_KM2, help="refuse larger AOIs")
    p.add_argument("--pc-key", default=None, help="Planetary Computer subscription key (or env PC_SDK_SUBSCRIPTION_KEY)")


def _request_from_args(args: argparse.Namespace):  # noqa: ANN202
    return make_request(
        aoi=args.aoi, start=args.start, end=args.end, catalog=args.catalog, collection=args.collection,
        out_dir=args.out, run_id=args.run_id, bands=args.bands, resolution=args.resolution,
        upsampling=args.upsampling, crs=args.crs, min_tile_cover=args.min_tile_cover,
        max_tiles_per_time=args.max_tiles_per_time, max_cloud_cover=args.max_cloud_cover,
        dl_timeout=args.dl_timeout, max_retries=args.max_retries, read_workers=args.read_workers,
        max_aoi_km2=args.max_aoi_km2, pc_key=args.pc_key or os.environ.get("PC_SDK_SUBSCRIPTION_KEY") or None,
    )


class _Bar:
    """Shows :class:`ProgressEvent` s as a tqdm bar on stderr."""

    def __init__(self, enabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=1000, unit="‰", disable=(not enabled) or not sys.stderr.isatty(), file=sys.stderr,
                         bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def __call__(self, event: ProgressEvent) -> None:
        target = int(event.fraction * 1000)
        if target > self._bar.n:
            self._bar.update(target - self._bar.n)
        self._bar.set_description(event.stage)
        self._bar.set_postfix_str(event.message[:70], refresh=True)

    def close(self) -> None:
        self._bar.close()


def cmd_preprocess(args: argparse.Namespace) -> int:
    """Run preprocessing and print where the outputs are."""
    from s2core.pipeline import preprocess

    request = _request_from_args(args)
    bar = _Bar(enabled=not args.quiet)
    cancel = CancelToken()
    try:
        manifest = preprocess(request, progress=bar, cancel=cancel)
    except KeyboardInterrupt:
        cancel.cancel()
        raise Cancelled("Interrupted: outputs already completed are kept.") from None
    finally:
        bar.close()
    run_dir = os.path.join(str(request.out_dir), manifest.run_id)
    done = [a for a in manifest.acquisitions if a.status == "completed"]
    print(f"Run {manifest.run_id}: {len(done)} acquisition(s) written to {run_dir}")
    print(f"Manifest: {os.path.join(run_dir, 'manifest.json')}")
    for a in manifest.acquisitions:
        if a.status == "completed":
            print(f"  {a.id}  tiles {'+'.join(a.tiles)}  valid {a.valid_fraction:.1%}  -> {a.outputs['raster']}")
        else:
            print(f"  {a.id}  FAILED: {a.error}")
    for s in manifest.skipped:
        print(f"  {s.date} skipped: {s.reason}")
    return 0 if manifest.status == "completed" else 1


def cmd_search(args: argparse.Namespace) -> int:
    """List the acquisitions a run would use, and the skipped ones, without reading pixels."""
    from s2core.pipeline import plan

    request = _request_from_args(args)
    acquisitions, skipped, n = plan(request)
    print(f"{n} item(s) found; {len(acquisitions)} acquisition(s) selected, {len(skipped)} skipped")
    for a in acquisitions:
        cc = a.scenes[0].cloud_cover
        print(f"  {a.date}  {a.id}  tiles {'+'.join(a.tiles)}  coverage {a.coverage:.1%}"
              + (f"  cloud {cc:.1f}%" if cc is not None else ""))
    for s in skipped:
        print(f"  {s.date}  skipped: {s.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m s2core``."""
    parser = argparse.ArgumentParser(prog="python -m s2core", description="Sentinel-2 L2A preprocessing and masks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preprocess", help="AOI + dates -> analysis-ready rasters and product masks")
    _add_preprocess_args(p)
    p.set_defaults(func=cmd_preprocess)
    s = sub.add_parser("search", help="list the acquisitions a run would use (no pixels read)")
    _add_preprocess_args(s)
    s.set_defaults(func=cmd_search)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 partial run, 2 error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # failures reach the user once, through the summary or the one-line error
        logging.getLogger("s2core").setLevel(logging.CRITICAL)
        logging.getLogger("rasterio").setLevel(logging.ERROR)
    try:
        return int(args.func(args))
    except S2CoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
