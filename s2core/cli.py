"""s2core.cli: ``python -m s2core preprocess|run|search|models ...`` — the headless command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from tqdm import tqdm

from s2core.allocator import bound_malloc_arenas
from s2core.errors import InvalidParameter, S2CoreError
from s2core.progress import CancelToken, ProgressEvent
from s2core.model.request import DEFAULT_DILATION_M, MaskOptions, field_choices, field_default
from s2core.run.request import make_request
from s2core.runfolder.manifest import new_run_id
from s2core.settings import get_settings

log = logging.getLogger("s2core")
#: GDAL block cache of CLI runs, in MB (GDAL's own default is 5 % of the RAM).
CLI_GDAL_CACHE_MB = "256"


def _add_preprocess_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aoi", default=None, help="AOI: vector file path (GeoJSON/GPKG/SHP), GeoJSON string or WKT "
                                               "(optional with --input: whole products)")
    p.add_argument("--start", default=None, help="first date, YYYY-MM-DD (optional with --input)")
    p.add_argument("--end", default=None, help="last date (inclusive), YYYY-MM-DD (optional with --input)")
    p.add_argument("--catalog", default=field_default("catalog"),
                   help="pc (default), earth-search, a STAC API URL, or a local catalog path")
    p.add_argument("--input", action="extend", nargs="+", default=None, metavar="PRODUCT",
                   help="local Sentinel-2 products instead of a catalog: .SAFE folders, .zip files, or folders of "
                        "them (L2A or L1C); all are processed as one batch")
    p.add_argument("--collection", default=None, help="STAC collection (default sentinel-2-l2a)")
    p.add_argument("--out", default=str(field_default("out_dir")),
                   help="output root; the run is written to OUT/<run_id>/ (default: %(default)s)")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: timestamp + random suffix)")
    p.add_argument("--bands", default=",".join(field_default("bands")), help="comma-separated bands (default: the 12 L2A bands)")
    p.add_argument("--resolution", type=float, default=field_default("resolution"),
                   help="output pixel size in metres (default %(default)s)")
    p.add_argument("--upsampling", default=field_default("upsampling"), choices=field_choices("upsampling"),
                   help="bands finer than their native pixels (default %(default)s; SCL always nearest)")
    p.add_argument("--downsampling", default=field_default("downsampling"), choices=field_choices("downsampling"),
                   help="bands coarser than their native pixels, SNAP's methods skipping nodata (default %(default)s)")
    p.add_argument("--flag-downsampling", default=field_default("flag_downsampling"), choices=field_choices("flag_downsampling"),
                   help="class/flag rasters (SCL) coarser than native (default %(default)s)")
    p.add_argument("--crs", default=None, help="output CRS: EPSG code, PROJ string or WKT (default: UTM zone of the AOI; "
                                               "on a geographic CRS such as EPSG:4326 --resolution metres become degrees)")
    p.add_argument("--output-format", default=field_default("output_format"),
                   help="COG (default), GTiff, or a GDAL raster driver that can write, e.g. ENVI, HFA, netCDF: "
                        "adds raster.<ext> beside the COGs")
    p.add_argument("--min-tile-cover", type=float, default=field_default("min_tile_cover"),
                   help="minimum AOI fraction a pass must cover (default %(default)s)")
    p.add_argument("--max-tiles-per-time", type=int, default=None, help="most tiles per pass (default: no limit)")
    p.add_argument("--max-cloud-cover", type=float, default=None, help="skip items above this eo:cloud_cover (percent)")
    p.add_argument("--dl-timeout", type=float, default=field_default("dl_timeout"),
                   help="seconds allowed for reading one asset, retries included (default %(default)s)")
    p.add_argument("--search-timeout", type=float, default=field_default("search_timeout"),
                   help="seconds allowed for the whole STAC search, retries and pages included (default %(default)s)")
    p.add_argument("--max-retries", type=int, default=field_default("max_retries"),
                   help="retries of a failing read (default %(default)s)")
    p.add_argument("--read-workers", type=int, default=field_default("read_workers"),
                   help="parallel asset reads (default %(default)s)")
    p.add_argument("--max-aoi-km2", type=float, default=get_settings().max_aoi_km2,
                   help="refuse larger AOIs (default %(default)s, setting S2CORE_MAX_AOI_KM2)")
    p.add_argument("--land-sea-mask", default=field_default("land_sea_mask"), choices=field_choices("land_sea_mask"),
                   help="set land (land) or sea (sea) pixels of raster.tif to NoData (1 km global land mask, "
                        "coast refined with SCL water; default %(default)s)")
    p.add_argument("--cloud-mask", default=field_default("cloud_mask"), choices=field_choices("cloud_mask"),
                   help="set cloudy/shadowed pixels of raster.tif to NoData by the product mask, the model "
                        "probabilities or the merged mask (model/merged with `run`; default %(default)s)")
    p.add_argument("--pc-key", default=None, help="Planetary Computer subscription key (or env PC_SDK_SUBSCRIPTION_KEY)")


def _add_mask_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("masks (reference names and defaults)")
    m = MaskOptions
    g.add_argument("--cloud-model", default=",".join(field_default("cloud_model", m)),
                   help="registered model name or .onnx file; comma-separate several for an ensemble "
                        "(default auto: ukis-csmask-6b-l2a with B11+B12, else ukis-csmask-4b-l2a)")
    g.add_argument("--shadow-model", default=field_default("shadow_model", m),
                   help="model giving shadow probabilities (default %(default)s)")
    g.add_argument("--cloud-thr", type=float, default=field_default("cloud_thr", m),
                   help="cloud where probability > this (default: the model's own decision, argmax for the U-Nets, "
                        "0.4 for s2cloudless, 0.3 for FarmVibes-convention files)")
    g.add_argument("--shadow-thr", type=float, default=field_default("shadow_thr", m),
                   help="shadow where probability > this (default: the model's own decision; reference: 0.2)")
    g.add_argument("--dilation-m", type=float, default=field_default("dilation_m", m),
                   help=f"dilation disk radius in metres (default {DEFAULT_DILATION_M:g} m)")
    g.add_argument("--dilation", type=int, default=field_default("dilation", m),
                   help="dilation disk radius in output pixels instead (reference: 5)")
    g.add_argument("--min-area-m2", type=float, default=field_default("min_area_m2", m),
                   help="remove masked regions / fill holes below this many m² (default off)")
    g.add_argument("--min-area", type=int, default=field_default("min_area", m),
                   help="the same in px instead")
    g.add_argument("--shadow-check", default=field_default("shadow_check", m), choices=field_choices("shadow_check", m),
                   help="filter: shadows that no cloud can cast under the acquisition's sun become clear; off: the "
                        "reference's behaviour (default %(default)s)")
    g.add_argument("--cloud-heights", default=f"{field_default('min_cloud_height', m):g},"
                                              f"{field_default('max_cloud_height', m):g}",
                   help="MIN,MAX cloud heights in metres for the shadow check (default %(default)s)")
    g.add_argument("--no-product-mask", action="store_true", help="do not merge the product (SCL) mask")
    g.add_argument("--in-memory", action="store_true",
                   help="hold the whole raster in memory for inference (faster, more memory)")
    g.add_argument("--inference-resolution", type=float, default=None,
                   help="metres (default: each model's native resolution, about 30 m for the U-Nets)")
    g.add_argument("--binary-mask", action="store_true", help="also write the reference's binary cloud_mask.tif")
    g.add_argument("--batch-size", type=int, default=field_default("batch_size", m),
                   help="patches per inference batch (default %(default)s)")


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale out (Dask)")
    g.add_argument("--scheduler", default=None,
                   help="run acquisitions as Dask tasks: 'local' (a LocalCluster), 'local:N', or the address of a "
                        "running scheduler such as tcp://10.0.0.5:8786 (default: in this process)")
    g.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    g.add_argument("--batch", action="store_true",
                   help="--aoi is a GeoJSON FeatureCollection: one run per feature (OUT/<run-id>-<feature>), "
                        "all planned as one task graph")


def _cloud_heights(text: str) -> dict[str, object]:
    """``MIN,MAX`` metres -> the two request fields (the request validates their values)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise InvalidParameter(f"--cloud-heights {text!r} is not MIN,MAX in metres: e.g. 200,12000.") from None
    return {"min_cloud_height": low, "max_cloud_height": high}


def _mask_options(args: argparse.Namespace) -> dict[str, object]:
    return {
        "cloud_model": args.cloud_model, "shadow_model": args.shadow_model, "cloud_thr": args.cloud_thr,
        "shadow_thr": args.shadow_thr, "dilation": args.dilation, "min_area": args.min_area,
        "dilation_m": args.dilation_m, "min_area_m2": args.min_area_m2, "shadow_check": args.shadow_check,
        **_cloud_heights(args.cloud_heights),
        "use_product_mask": not args.no_product_mask, "in_memory": args.in_memory,
        "inference_resolution": args.inference_resolution, "binary_mask": args.binary_mask,
        "batch_size": args.batch_size,
    }


def _params(args: argparse.Namespace) -> dict[str, object]:
    """Request fields common to catalog and SAFE runs."""
    return dict(
        masks=_mask_options(args) if getattr(args, "cloud_model", None) is not None else None,
        collection=args.collection, out_dir=args.out, bands=args.bands, resolution=args.resolution,
        cloud_mask=args.cloud_mask, land_sea_mask=args.land_sea_mask, upsampling=args.upsampling,
        downsampling=args.downsampling,
        flag_downsampling=args.flag_downsampling, crs=args.crs, output_format=args.output_format,
        min_tile_cover=args.min_tile_cover,
        max_tiles_per_time=args.max_tiles_per_time, max_cloud_cover=args.max_cloud_cover,
        dl_timeout=args.dl_timeout, search_timeout=args.search_timeout, max_retries=args.max_retries, read_workers=args.read_workers,
        max_aoi_km2=args.max_aoi_km2,
    )


def _settings_key() -> Optional[str]:
    key = get_settings().pc_key
    return key.get_secret_value() if key else None


def _request_from_args(args: argparse.Namespace, **override: object):  # noqa: ANN202
    missing = [f"--{k}" for k in ("aoi", "start", "end") if getattr(args, k) in (None, "")]
    if missing:
        raise InvalidParameter(f"{', '.join(missing)} missing: give them, or --input with local SAFE products.")
    # the run id is fixed here, so that an interrupted run can be named to resume it
    kwargs: dict[str, object] = dict(aoi=args.aoi, run_id=args.run_id or new_run_id())
    kwargs.update(override)
    return make_request(
        aoi=kwargs["aoi"], start=args.start, end=args.end, catalog=args.catalog, run_id=kwargs["run_id"],
        pc_key=args.pc_key or _settings_key(), **_params(args),
    )


class _Bar:
    """Shows :class:`ProgressEvent` s as a tqdm bar on stderr."""

    def __init__(self, enabled: bool) -> None:
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
    from s2core.run.preprocess import preprocess  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)

    if getattr(args, "batch", False):
        return _cmd_batch(args)
    if args.input:
        return _cmd_safe(args)
    request = _request_from_args(args)
    bar = _Bar(enabled=not args.quiet)
    cancel = CancelToken()
    try:
        manifest = preprocess(request, progress=bar, cancel=cancel, scheduler=args.scheduler, workers=args.workers)
    except KeyboardInterrupt:
        cancel.cancel()
        bar.close()
        print(_interrupted([request.run_id], request.run_id), file=sys.stderr)
        return 130
    finally:
        bar.close()
    return _summary(request, manifest)


def _cmd_batch(args: argparse.Namespace) -> int:
    """One run per feature of a FeatureCollection, planned together."""
    from s2core.run.batch import split_features  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)
    base = args.run_id or new_run_id()
    requests = [_request_from_args(args, aoi=geom, run_id=f"{base}-{name}") for name, geom in split_features(args.aoi)]
    return _run_all(args, requests, resume_id=base)


def _cmd_safe(args: argparse.Namespace) -> int:
    """Local SAFE products: with --aoi one run over those that cover it, else one run per product (named after
    it, so that the same command resumes it)."""
    if args.aoi and not args.run_id:  # fixed here, so that an interrupted run can be named to resume it
        args.run_id = new_run_id()
    return _run_all(args, _safe_requests(args, ("start", "end", "run_id")), resume_id=args.run_id)


def _safe_requests(args: argparse.Namespace, given: tuple[str, ...]) -> list:
    """The requests for ``--input`` products; ``given`` are the optional arguments passed on when set."""
    from s2core.run.safe_runs import safe_requests  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)

    extra = {k: getattr(args, k) for k in given if getattr(args, k)}
    return safe_requests(args.input, args.aoi, **extra, **_params(args))


def _run_all(args: argparse.Namespace, requests: list, resume_id: Optional[str] = None) -> int:
    """Several runs behind one progress bar; a summary per run. ``resume_id``: the ``--run-id`` that resumes
    them after an interruption (None: the same command does)."""
    from s2core.run.batch import preprocess_batch  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)

    bar = _Bar(enabled=not args.quiet)
    try:
        results = preprocess_batch(requests, progress=bar, scheduler=args.scheduler, workers=args.workers)
    except KeyboardInterrupt:
        bar.close()
        print(_interrupted([r.run_id for r in requests if r.run_id], resume_id), file=sys.stderr)
        return 130
    finally:
        bar.close()
    if len(results) == 1 and results[0].manifest is None:  # one run that could not start: a plain error
        print(f"error: {results[0].error}", file=sys.stderr)
        return 2
    code = 0
    for req, res in zip(requests, results):
        if res.manifest is None:
            print(f"Run {res.run_id}: not started: {res.error}")
            code = 1
        else:
            code = max(code, _summary(req, res.manifest))
    return code


def _interrupted(run_ids: list[str], resume_id: Optional[str]) -> str:
    """The one line for a run (or runs) stopped by Ctrl-C or SIGTERM: what is kept and how to resume."""
    if len(run_ids) == 1:
        which, them = f"run {run_ids[0]} keeps its", "it"
    else:
        which, them = f"runs {', '.join(run_ids[:3])}{', …' if len(run_ids) > 3 else ''} keep their", "them"
    how = f"the same command with --run-id {resume_id}" if resume_id else "the same command"
    return f"error: interrupted: {which} completed acquisitions; {how} resumes {them}."


def _summary(request, manifest) -> int:  # noqa: ANN001
    """Print where a run's outputs are; 0 when every acquisition completed, else 1."""
    run_dir = os.path.join(str(request.out_dir), manifest.run_id)
    done = [a for a in manifest.acquisitions if a.status == "completed"]
    kept = set(manifest.resumed)
    resumed = f" ({len(kept)} kept from the earlier run of this id)" if kept else ""
    print(f"Run {manifest.run_id}: {len(done)} acquisition(s) written to {run_dir}{resumed}")
    print(f"Manifest: {os.path.join(run_dir, 'manifest.json')}")
    for a in manifest.acquisitions:
        if a.status == "completed":
            line = f"  {a.id}  tiles {'+'.join(a.tiles)}  valid {a.valid_fraction:.1%}  -> {a.outputs['raster']}"
            if a.mask_fractions:
                line += (f"  mask: cloud {a.mask_fractions['cloud']:.1%} shadow {a.mask_fractions['shadow']:.1%}"
                         f" (product: cloud {a.product_mask_fractions['cloud']:.1%}"
                         f" shadow {a.product_mask_fractions['shadow']:.1%})")
            print(line + ("  (kept)" if a.id in kept else ""))
        else:
            print(f"  {a.id}  FAILED: {a.error}")
    for s in manifest.skipped:
        print(f"  {s.date} skipped: {s.reason}")
    for warning in dict.fromkeys(w for a in manifest.acquisitions for w in a.warnings):
        print(f"warning: {warning}")
    return 0 if manifest.status == "completed" else 1


def cmd_search(args: argparse.Namespace) -> int:
    """List the acquisitions a run would use, and the skipped ones, without reading pixels."""
    from s2core.planner import plan  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)

    requests = _safe_requests(args, ("start", "end")) if args.input else [_request_from_args(args)]
    for request in requests:
        acquisitions, skipped, n = plan(request)
        print(f"{n} item(s) found; {len(acquisitions)} acquisition(s) selected, {len(skipped)} skipped")
        for a in acquisitions:
            cc = a.cloud_cover
            print(f"  {a.date}  {a.id}  tiles {'+'.join(a.tiles)}  coverage {a.coverage:.1%}"
                  + (f"  cloud {cc:.1f}%" if cc is not None else ""))
        for s in skipped:
            print(f"  {s.date}  skipped: {s.reason}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Print one line per registered model (and build s2cloudless's ONNX file if asked)."""
    from s2core.masks.registry import describe, get_card, models_dir, registered_cards  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)

    if args.build:
        from s2core.masks.s2cloudless_onnx import build_s2cloudless_onnx  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)

        card = get_card("s2cloudless")
        path = card.path()
        assert path is not None
        build_s2cloudless_onnx(path)
        print(f"built {path}")
    for card in registered_cards().values():
        print(describe(card))
    user = sorted(p.name for p in models_dir().glob("*.onnx")
                  if p.name not in {str(c.source.file) for c in registered_cards().values()})
    for name in user:
        print(f"{name}  [user ONNX file, FarmVibes convention: 12 bands; cloud softmax / shadow sigmoid]")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Cloud statistics over the AOI per date, clearest first (and a fields × dates table for a batch)."""
    from pydantic import ValidationError  # lazy: only this command reads manifests

    from s2core.runfolder import cloud_stats  # lazy: a command loads its stage only when it runs (--help and usage errors stay instant)

    stats = []
    for given in args.run_dir:
        runs = cloud_stats.runs_of(given)
        if not runs:
            raise InvalidParameter(f"{given} is not a run folder (no manifest.json in it or in its sub-folders): "
                                   "give OUT/<run-id>, or the output folder of a batch.")
        for run in runs:
            try:
                stats += cloud_stats.run_stats(run)
            except (OSError, ValueError, ValidationError) as exc:
                raise InvalidParameter(f"{run}/manifest.json cannot be read ({type(exc).__name__}): the run folder "
                                       "is damaged or from another tool.") from None
    if args.csv:
        print(cloud_stats.to_csv(stats), end="")
    elif args.json:
        print(cloud_stats.to_json(stats))
    else:
        print(cloud_stats.to_text(stats) if stats else "No completed acquisition.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m s2core``."""
    parser = argparse.ArgumentParser(prog="python -m s2core", description="Sentinel-2 preprocessing and cloud/shadow masks (STAC catalogs or local SAFE products).")
    _add_global_args(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preprocess", help="AOI + dates -> analysis-ready rasters and product masks")
    _add_preprocess_args(p)
    _add_scale_args(p)
    p.set_defaults(func=cmd_preprocess)
    s = sub.add_parser("search", help="list the acquisitions a run would use (no pixels read)")
    _add_preprocess_args(s)
    s.set_defaults(func=cmd_search)
    r = sub.add_parser("run", help="preprocess + cloud/shadow masks (the preprocess_s2_improved_masks workflow)")
    _add_preprocess_args(r)
    _add_mask_args(r)
    _add_scale_args(r)
    r.set_defaults(func=cmd_preprocess)
    m = sub.add_parser("models", help="list the registered cloud/shadow models")
    m.add_argument("--build", action="store_true", help="(re)build models/s2cloudless.onnx from the s2cloudless package")
    m.set_defaults(func=cmd_models)
    st = sub.add_parser("stats", help="cloud statistics over the AOI per date, clearest first (a batch: fields x dates)")
    st.add_argument("run_dir", nargs="+", help="run folder(s) OUT/<run-id>, or a batch's output folder")
    fmt = st.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one CSV row per acquisition (shares 0..1)")
    fmt.add_argument("--json", action="store_true", help="JSON (with the fields x dates table for several runs)")
    st.set_defaults(func=cmd_stats)
    for command in (p, s, r, m, st):  # also after the command: `python -m s2core run ... -q`
        _add_global_args(command, argparse.SUPPRESS)
    return parser


def _add_global_args(p: argparse.ArgumentParser, default: object) -> None:
    """-v/-q; a sub-command's copy defaults to SUPPRESS so that it keeps the value given before it."""
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log details")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bar")


def interrupt_on_sigterm() -> None:
    """Make SIGTERM (a service manager's stop, ``kill``) end a run like Ctrl-C: recorded ``interrupted``,
    temporary files removed. Installed by ``python -m s2core`` only, not by callers of :func:`main`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 partial run, 2 error)."""
    try:
        parser = build_parser()  # reads the settings (defaults of some options)
    except S2CoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    # GDAL reads this once, at its first block: each block of a run is read once, so a small cache
    # costs no time and keeps a whole-tile run's memory down (the user's own setting wins)
    os.environ.setdefault("GDAL_CACHEMAX", CLI_GDAL_CACHE_MB)
    bound_malloc_arenas()  # before any thread allocates: a whole-tile run's memory stays near what it uses
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # failures reach the user once, through the summary or the one-line error
        logging.getLogger("s2core").setLevel(logging.CRITICAL)
        logging.getLogger("rasterio").setLevel(logging.CRITICAL)  # GDAL's own lines: the outcome is reported
        logging.getLogger("urllib3").setLevel(logging.ERROR)  # its "Retrying (...)" lines: the outcome is reported
        # Dask's own INFO chatter (this process, and worker processes through the environment)
        logging.getLogger("distributed").setLevel(logging.ERROR)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    try:
        return int(args.func(args))
    except S2CoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
