"""Variants of the NEON tree-crown cell of ``bench_user_data.py``: does a coarser pixel or a label change help?

The cell itself (``bench_user_data.py --only g_neon_crowns``) trains on the NEON images as they are, with
each crown box rasterised as its inscribed ellipse. This script runs the same path (``geomax export`` with
``--things tree``, ``geomax train --minutes M`` with every other default, ``geomax predict``, boxes of the
predicted instances matched to the crown boxes at IoU >= 0.5) with one of two changes a user could make:

``--resample F``
    every raster (training mosaic and test parts) averaged down by ``F`` before export / prediction
    (0.1 m -> 0.1 F m; crowns of ~38 px become ~38 / F px, a 128 px crop sees F^2 times the ground);
    predicted boxes are scaled back by ``F`` before matching.
``--ellipse-scale S``
    the training and test label ellipses drawn at ``S`` times the box (``S`` < 1: neighbouring crowns no
    longer touch, a band of background between them); scoring still uses the full boxes.
``--lr LR``
    the peak learning rate of the one-cycle schedule (``geomax train --lr``; default: the recipe's).
``--chip-size N``
    the training chip size (``geomax train --chip-size``; default: the recipe's, 128 px crops on a CPU);
    prediction tiles follow it.

Reported per variant: the validation PQ_things of the trained model (its own held-out chips of the
training mosaic: the signal to choose by, never the test parts), epochs, the box F1 on the training
mosaic itself (``train_f1``: how well the model fits what it was trained on) and the test F1 /
precision / recall / instances predicted. Appends a row to ``benchmarks/results/neon_variants.json``. Run it alone.

    python benchmarks/neon_variants.py deepforest/data --minutes 10 --resample 2
    python benchmarks/neon_variants.py deepforest/data --minutes 10 --ellipse-scale 0.8
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import neon_crowns  # noqa: E402

GEOMAX = [sys.executable, "-m", "geomax.cli"]
RESULTS = Path(__file__).parent / "results" / "neon_variants.json"


def _run(args: list[str]) -> str:
    res = subprocess.run(GEOMAX + args, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"geomax {' '.join(args[:1])} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def resample(path: Path, factor: int) -> Path:
    """``path`` averaged down by ``factor`` (a new GeoTIFF beside it); ``path`` itself for 1."""
    import rasterio
    from rasterio.enums import Resampling

    if factor == 1:
        return path
    out = path.with_name(f"{path.stem}_x{factor}.tif")
    with rasterio.open(path) as src:
        h, w = src.height // factor, src.width // factor
        data = src.read(out_shape=(src.count, h, w), resampling=Resampling.average)
        profile = {**src.profile, "width": w, "height": h,
                   "transform": src.transform * src.transform.scale(src.width / w, src.height / h)}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def scaled_ellipses(scale: float):
    """:func:`neon_crowns.ellipses` drawing each ellipse at ``scale`` times its box, about the box centre."""
    base = neon_crowns.ellipses

    def ellipses(boxes, transform):
        b = np.asarray(boxes, float)
        c = np.c_[(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2]
        half = np.c_[(b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2] * scale
        return base(np.c_[c - half, c + half], transform)

    return ellipses


def run(neon: Path, minutes: float, factor: int, scale: float, lr: float | None, work: Path,
        chip_size: int | None = None) -> dict:
    if scale != 1.0:
        neon_crowns.ellipses = scaled_ellipses(scale)
    data = neon_crowns.prepare(neon, work / "data")
    t0 = time.monotonic()
    _run(["export", str(resample(data["train_raster"], factor)), str(data["train_labels"]), str(work / "chips"),
          "--things", neon_crowns.CLASS_NAME, "--quiet"])
    _run(["train", str(work / "chips"), "--out", str(work / "model"), "--minutes", str(minutes), "--quiet",
          *(["--lr", str(lr)] if lr else []), *(["--chip-size", str(chip_size)] if chip_size else [])])
    emd = json.loads((work / "model" / "model.emd").read_text())
    pred = {}
    for key, test in data["tests"].items():
        out = work / f"pred_{key}.tif"
        _run(["predict", str(work / "model"), str(resample(test["raster"], factor)), str(out), "--quiet"])
        pred[key] = neon_crowns.instance_boxes(out) * factor
    scores = neon_crowns.score({k: t["boxes"] for k, t in data["tests"].items()}, pred)
    _run(["predict", str(work / "model"), str(resample(data["train_raster"], factor)), str(work / "pred_train.tif"),
          "--quiet"])
    train_fit = neon_crowns.match(data["train_boxes"], neon_crowns.instance_boxes(work / "pred_train.tif") * factor)
    return {"resample": factor, "ellipse_scale": scale, "lr": lr or emd["ModelParameters"]["train_config"]["lr"],
            "minutes": minutes, "chip_size": emd["ImageHeight"],
            "epochs": len(emd.get("TrainingHistory") or []),
            "valid_pq_things": (emd.get("Metrics") or {}).get("things", {}).get("pq"),
            "train_f1": train_fit["f1"],
            **{k: scores["all"][k] for k in ("f1", "precision", "recall", "tp", "fp", "fn", "predicted")},
            "f1_per_image": {k: r["f1"] for k, r in scores["per_image"].items()},
            "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("neon", type=Path, help="the deepforest data folder (NEON images and .xml)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--resample", type=int, default=1, help="average the rasters down by this factor")
    parser.add_argument("--ellipse-scale", type=float, default=1.0, help="label ellipses at this share of the box")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--chip-size", type=int, default=None, help="training chip size (default: the recipe's)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the data, chips, model and predictions in this new folder (default: a temporary one)")
    args = parser.parse_args()
    if args.workdir is not None:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            raise SystemExit(f"--workdir {args.workdir} is not empty; give a new folder")
        args.workdir.mkdir(parents=True, exist_ok=True)
        row = run(args.neon, args.minutes, args.resample, args.ellipse_scale, args.lr, args.workdir,
                  args.chip_size)
    else:
        with tempfile.TemporaryDirectory(prefix="neon_variants_") as tmp:
            row = run(args.neon, args.minutes, args.resample, args.ellipse_scale, args.lr, Path(tmp),
                      args.chip_size)
    rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    rows.append(row)
    RESULTS.write_text(json.dumps({"benchmark": "neon_variants", "rows": rows}, indent=2))
    print(f"{'chip':>5} {'resample':>8} {'ellipse':>7} {'lr':>7} {'epochs':>6} {'valid PQth':>10} {'train F1':>8} {'F1':>5} {'P':>5} {'R':>5} {'pred':>5}")
    for r in rows:
        print(f"{r.get('chip_size', 128):>5} {r['resample']:>8} {r['ellipse_scale']:>7.2f} {r['lr']:>7.0e} {r['epochs']:>6} {100 * (r['valid_pq_things'] or 0):>10.1f} "
              f"{r.get('train_f1', float('nan')):>8.2f} "
              f"{r['f1']:>5.2f} {r['precision']:>5.2f} {r['recall']:>5.2f} {r['predicted']:>5}")
    print(f"wrote {RESULTS.relative_to(Path(__file__).parent.parent)}")


if __name__ == "__main__":
    main()
