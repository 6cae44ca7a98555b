"""Training throughput of the MaXDeepLab learner: images per second, full precision and mixed precision.

Trains ``--backbone`` on synthetic chips of ``--chip-size`` px through the real
``MaXDeepLab`` learner (fastai loop, loss, matching; validation skipped), times
``--batches`` training batches after ``--warmup`` untimed ones, and reports
images per second. On CUDA it runs twice in the same process, full precision
(float32) and mixed precision (fastai's ``to_fp16``, what ``fit`` turns on on
CUDA), and reports the ratio; on a CPU only float32 runs.

Prints a table and writes ``benchmarks/results/bench_train_speed.json``.

    python benchmarks/bench_train_speed.py                                   # GPU: max_deeplab_s, 512 px
    python benchmarks/bench_train_speed.py --backbone max_deeplab_tiny --chip-size 128 --batch-size 4 \\
        --batches 3 --warmup 1                                               # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def make_chips(folder: Path, chip: int, n_chips: int):
    from geomax import export_training_data
    from geomax.data.synthetic import SYNTHETIC_CLASSES, make_scene

    side = chip * max(2, int(n_chips ** 0.5 + 0.999))
    make_scene(folder / "scene.tif", folder / "scene.gpkg", size=side, seed=11)
    export_training_data(folder / "scene.tif", folder / "scene.gpkg", folder / "chips", class_table=SYNTHETIC_CLASSES,
                         tile_size=chip, progress=False)
    return folder / "chips"


def timed_training(chips: Path, args, mixed: bool) -> dict:
    """Images per second over ``args.batches`` batches after ``args.warmup`` (one fresh model)."""
    from fastai.callback.core import Callback, CancelFitException, CancelValidException

    from geomax import MaXDeepLab, prepare_data

    data = prepare_data(chips, chip_size=args.chip_size, batch_size=args.batch_size, val_split_pct=0.1)
    torch.manual_seed(0)
    model = MaXDeepLab(data, backbone=args.backbone)
    cuda = model.device.type == "cuda"

    class Clock(Callback):
        order = 99

        def before_fit(self):
            self.n, self.t0, self.seconds = 0, None, None

        def before_batch(self):
            if self.n == args.warmup:
                if cuda:
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

        def before_validate(self):
            raise CancelValidException()  # only training steps are timed; no validation between epochs

        def after_batch(self):
            if not self.training:
                return
            self.n += 1
            if self.n == args.warmup + args.batches:
                if cuda:
                    torch.cuda.synchronize()
                self.seconds = time.perf_counter() - self.t0
                raise CancelFitException()

    clock = Clock()
    learn = model.learn
    learn.to_fp16() if mixed else learn.to_fp32()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    epochs = 1 + (args.warmup + args.batches) // max(len(data.train), 1)
    learn.fit(epochs, args.lr, cbs=[clock])
    if clock.seconds is None:
        raise RuntimeError(f"Only {clock.n} batches ran; make more chips (--chips) or fewer batches.")
    images = args.batches * args.batch_size
    return {"precision": "mixed (fp16)" if mixed else "float32", "device": str(model.device),
            "batches": args.batches, "images": images, "seconds": clock.seconds,
            "images_per_s": images / clock.seconds,
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="max_deeplab_s")
    ap.add_argument("--chip-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=20, help="timed training batches")
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    ap.add_argument("--chips", type=int, default=64, help="synthetic training chips to make")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_train_speed.json"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_speed_") as tmp:
        chips = make_chips(Path(tmp), args.chip_size, args.chips)
        modes = [False, True] if torch.cuda.is_available() else [False]
        for mixed in modes:
            rows.append(timed_training(chips, args, mixed))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"\n{args.backbone}, {args.chip_size} px chips, batch {args.batch_size}, {args.batches} timed batches "
          f"after {args.warmup}, on {device}")
    print(f"{'precision':14s} {'images/s':>9s} {'seconds':>8s} {'peak GPU GB':>12s}")
    for r in rows:
        mem = "-" if r["peak_gpu_memory_gb"] is None else f"{r['peak_gpu_memory_gb']:.1f}"
        print(f"{r['precision']:14s} {r['images_per_s']:9.2f} {r['seconds']:8.1f} {mem:>12s}")
    result = {"benchmark": "train_speed", "args": vars(args), "device": device, "runs": rows}
    if len(rows) == 2:
        result["mixed_vs_float32"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]
        print(f"mixed / float32: {result['mixed_vs_float32']:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")
    return result


if __name__ == "__main__":
    main()
