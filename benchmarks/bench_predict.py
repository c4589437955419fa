"""Benchmark: s2core.masks.predict vs the ukis-csmask CSmask API, and our s2cloudless ONNX vs LightGBM.

Same real input for both sides, same model, same machine, one run:

* 6 bands (B02 B03 B04 B08 B11 B12) of 29RKH (../shared/data) at 100 m (1098², cropped to
  1024² and whole) and at 200 m (549², where all six bands are native), model
  ``ukis-csmask-6b-l2a``: wall time, megapixels/s, speed-up, class agreement.
* s2cloudless: the peer's reference arrays (856 × 512 × 13): ONNX Runtime vs LightGBM
  ``predict``; time and largest probability difference.

Run: ``python benchmarks/bench_predict.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import RKH, SHARED  # noqa: E402

SIX = ["B02", "B03", "B04", "B08", "B11", "B12"]
UKIS = ["blue", "green", "red", "nir", "swir16", "swir22"]


def rkh(size: int) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    out = []
    for b in SIX:
        with rasterio.open(RKH / f"{b}.tif") as ds:
            out.append(ds.read(1, out_shape=(size, size), resampling=Resampling.bilinear).astype(np.float32) / 1e4)
    return np.stack(out)


def best_of(fn, repeat: int = 3) -> tuple[float, object]:  # noqa: ANN001
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def bench_ukis() -> None:
    from ukis_csmask.mask import CSmask

    from s2core import predict

    print("ukis-csmask-6b-l2a: s2core.masks.predict vs ukis_csmask.CSmask (best of 3, same input, same ONNX file)")
    print(f"{'input':>22} {'ours s':>8} {'CSmask s':>9} {'ours MP/s':>10} {'CSmask MP/s':>12} {'speed-up':>9} "
          f"{'agree':>7} {'patches':>8}  engine")
    full = rkh(1098)
    cases = [("29RKH 100 m 1024²", full[:, :1024, :1024]), ("29RKH 100 m 1098²", full), ("29RKH 200 m 549²", rkh(549))]
    predict(cases[-1][1][:, :256, :256], SIX, "ukis-csmask-6b-l2a")  # session created once, as in a run
    for label, img in cases:
        mp = img.shape[1] * img.shape[2] / 1e6
        t_ours, res = best_of(lambda: predict(img, SIX, "ukis-csmask-6b-l2a"))
        hwc = np.ascontiguousarray(np.moveaxis(img, 0, -1))
        t_peer, peer = best_of(lambda: CSmask(hwc.copy(), UKIS, product_level="l2a"))
        ours = np.argmax(np.stack([1 - res.cloud_prob - res.shadow_prob, res.cloud_prob, res.shadow_prob]), 0)
        agree = float((ours == peer.csm[..., 0]).mean())
        print(f"{label:>22} {t_ours:8.2f} {t_peer:9.2f} {mp / t_ours:10.2f} {mp / t_peer:12.2f} "
              f"{t_peer / t_ours:8.2f}x {agree:7.1%} {res.stats[0].patches:8d}  {res.stats[0].engine}")
    print("CSmask runs 256² tiles at 20 % overlap plus a full extra row and column of tiles; s2core lays out the")
    print("fewest 256² patches with >= 32 px overlap, skips empty ones and blends with a linear ramp.")
    _engines(cases[0][1])
    _csmask_ceiling(cases[0][1])
    _self_agreement(full)


def _classes(res) -> np.ndarray:  # noqa: ANN001
    return np.argmax(np.stack([1 - res.cloud_prob - res.shadow_prob, res.cloud_prob, res.shadow_prob]), 0)


def _engines(img: np.ndarray) -> None:
    """Our predict on each engine: time, and how far OpenVINO's bf16 moves the classes from ONNX Runtime."""
    import os

    from s2core import predict
    from s2core.masks.engine import openvino_available

    t_ort, ort = best_of(lambda: predict(img, SIX, "ukis-csmask-6b-l2a", engine="onnxruntime"))
    line = f"engines on {img.shape[1]}x{img.shape[2]}: onnxruntime fp32 {t_ort:.2f} s"
    if openvino_available():
        for precision in ("fp32", "bf16"):
            os.environ["S2CORE_PRECISION"] = precision
            try:
                t_ov, ov = best_of(lambda: predict(img, SIX, "ukis-csmask-6b-l2a", engine="openvino"))
            finally:
                os.environ.pop("S2CORE_PRECISION", None)
            agree = float((_classes(ov) == _classes(ort)).mean())
            line += (f"; {ov.stats[0].engine} {t_ov:.2f} s ({t_ort / t_ov:.2f}x, classes as onnxruntime's on "
                     f"{agree:.2%}, max |dp| {np.abs(ov.cloud_prob - ort.cloud_prob).max():.3f})")
    print(line)


def _self_agreement(full: np.ndarray) -> None:
    """CSmask against itself when its tiles shift by 8 … 128 px: how much the layout alone changes the classes
    (the bar for "the same answer" from any other layout)."""
    from ukis_csmask.mask import CSmask

    hwc = np.ascontiguousarray(np.moveaxis(full, 0, -1))
    size = 1098 - 128
    base = CSmask(hwc[:size + 128, :size + 128].copy(), UKIS, product_level="l2a").csm[..., 0]
    shown = []
    for shift in (8, 16, 32, 51, 64, 102, 128):
        moved = CSmask(np.ascontiguousarray(hwc[shift:shift + size, shift:shift + size]).copy(), UKIS,
                       product_level="l2a").csm[..., 0]
        shown.append((shift, float((moved == base[shift:shift + size, shift:shift + size]).mean())))
    values = [a for _, a in shown]
    print("CSmask against itself with its tiles shifted: " + ", ".join(f"{s} px {a:.1%}" for s, a in shown)
          + f" (median {float(np.median(values)):.1%}, range {min(values):.1%}-{max(values):.1%})")


def _csmask_ceiling(img: np.ndarray) -> None:
    """How much of CSmask's time is the model itself on its own tiles: the most that any predict laid
    out like CSmask (the only way to agree with it closely where the model is layout-sensitive) can gain."""
    import onnxruntime as ort
    from ukis_csmask.mask import CSmask
    from ukis_csmask.utils import tile_array

    hwc = np.ascontiguousarray(np.moveaxis(img, 0, -1))
    peer = CSmask(hwc.copy(), UKIS, product_level="l2a")
    t_peer, _ = best_of(lambda: CSmask(hwc.copy(), UKIS, product_level="l2a"))
    tiles = np.ascontiguousarray(np.moveaxis(tile_array(peer.img, 256, 256, overlap=0.2), -1, 1))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 0  # as CSmask: all cores
    session = ort.InferenceSession(peer.model_file, opts, providers=["CPUExecutionProvider"])
    session.run(None, {"input": tiles[:1]})
    t_model, _ = best_of(lambda: [session.run(None, {"input": tiles[i:i + 1]}) for i in range(len(tiles))])
    print(f"CSmask on {img.shape[1]}x{img.shape[2]}: {t_peer:.2f} s, of which {t_model:.2f} s is ONNX Runtime on its "
          f"{len(tiles)} tiles: a predict with CSmask's patches can be at most {t_peer / t_model:.2f}x faster on this CPU.")
    shifted = CSmask(np.ascontiguousarray(hwc[16:, 16:]).copy(), UKIS, product_level="l2a").csm[..., 0]
    self_agree = float((shifted == peer.csm[16:, 16:, 0]).mean())
    print(f"Layout sensitivity: CSmask on the same image less its first 16 rows and columns (its tiles shifted by "
          f"16 px) agrees with itself on {self_agree:.1%} of the pixels.")


def bench_s2cloudless() -> None:
    peer = SHARED / "l1c" / "s2cloudless-peer" / "input_arrays.npz"
    if not peer.exists():
        print(f"skip s2cloudless: {peer} not found")
        return
    from s2cloudless import S2PixelCloudDetector

    from s2core import predict

    ref = np.load(peer)
    image = ref["s2_im"]
    all13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    chw = np.ascontiguousarray(np.moveaxis(image[0], -1, 0))
    predict(chw[:, :8, :8], all13, "s2cloudless")
    t_ours, res = best_of(lambda: predict(chw, all13, "s2cloudless"))
    det = S2PixelCloudDetector(all_bands=True)
    t_lgbm, lgbm = best_of(lambda: det.get_cloud_probability_maps(image))
    mp = chw.shape[1] * chw.shape[2] / 1e6
    print(f"\ns2cloudless on {chw.shape[1]}x{chw.shape[2]} px: ONNX Runtime {t_ours:.2f} s ({mp / t_ours:.2f} MP/s), "
          f"LightGBM {t_lgbm:.2f} s ({mp / t_lgbm:.2f} MP/s): {t_lgbm / t_ours:.2f}x; "
          f"max |Δp| vs LightGBM {np.abs(res.cloud_prob - lgbm[0]).max():.2e}, "
          f"vs the peer's cl_probs {np.abs(res.cloud_prob - ref['cl_probs'][0]).max():.2e}")


def main() -> int:
    if not (RKH / "B12.tif").exists():
        print(f"skip: {RKH} not found (needs ../shared/data)")
        return 0
    bench_ukis()
    bench_s2cloudless()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
