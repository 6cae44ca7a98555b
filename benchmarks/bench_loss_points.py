"""The loss on sampled pixels (``loss_resolution="sampled"``) against the loss on every pixel (``"input"``).

``"input"`` resizes the mask and semantic logits to the chip and computes the PQ-style, mask-ID
and semantic terms on every pixel: its cost grows with the chip's area times the slots.
``"sampled"`` computes the same terms on ``loss_points`` pixels per chip (one drawn at random in
each cell of a grid), with the logits interpolated at those pixels only (Mask2Former's point
loss). Three parts, each measured in this run:

``cost``
    Loss forward + backward (milliseconds, median of 5) on random logits of the shapes the CPU
    network gives (batch 8, 56 slots, output stride 4) at 128, 256 and 512 px, for each mode.
``quality``
    Validation PQ after the same number of steps (``--epochs`` of a 128 px export of the demo's
    synthetic style, scene seed 11: the tuning scene of ``bench_train_speed.py``), each mode
    with model seeds 0 and 1: the seed-to-seed spread is the noise the mode difference is read
    against.
``budget``
    What a user gets in the same time: ``fit(minutes=--minutes)`` with the defaults on a 256 px
    export of the second synthetic style (``user_scenes``, scene seed 300: neither a tuning nor a
    test seed of ``bench_user_data.py``), each mode: steps and validation PQ.

Prints tables and writes ``benchmarks/results/bench_loss_points.json``. Run it alone on the machine.

    python benchmarks/bench_loss_points.py                       # about 25 minutes on 2 cores
    python benchmarks/bench_loss_points.py --parts cost
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODES = ("input", "sampled")


def loss_cost(sizes, repeats: int = 5) -> list[dict]:
    from bench_loss import C, make_chips

    from geomax.common import PRED_CLASS_LOGITS, PRED_MASK_LOGITS, PRED_PIXEL_FEATURES, PRED_SEMANTIC_LOGITS
    from geomax.models.criterion import MaXDeepLabLoss

    rows = []
    for size in sizes:
        _, tgt, _ = make_chips(8, size, seed=0)
        s = size // 4
        for mode in MODES:
            fn = MaXDeepLabLoss(C, loss_resolution=mode)
            times = []
            for r in range(repeats + 1):
                torch.manual_seed(r)
                pred = {PRED_MASK_LOGITS: torch.randn(8, 56, s, s, requires_grad=True),
                        PRED_CLASS_LOGITS: torch.randn(8, 56, C + 1, requires_grad=True),
                        PRED_SEMANTIC_LOGITS: torch.randn(8, C + 1, s, s, requires_grad=True),
                        PRED_PIXEL_FEATURES: torch.randn(8, 32, s, s, requires_grad=True)}
                t0 = time.perf_counter()
                fn(pred, tgt).backward()
                if r:  # the first call warms up
                    times.append(time.perf_counter() - t0)
            rows.append({"size": size, "mode": mode, "points": fn.loss_points if mode == "sampled" else size * size,
                         "ms": 1000 * statistics.median(times), "total": fn.last_terms["total"]})
            print(f"cost {size} px {mode:8s}: {rows[-1]['ms']:.0f} ms", flush=True)
    return rows


def _fit(chips: Path, mode: str, seed: int, epochs: int | None = None, minutes: float | None = None) -> dict:
    from geomax import MaXDeepLab, prepare_data

    data = prepare_data(chips, batch_size=8, val_split_pct=0.1, seed=0)
    torch.manual_seed(seed)
    model = MaXDeepLab(data, loss_resolution=mode)
    t0 = time.perf_counter()
    if minutes is None:
        model.fit(epochs, checkpoint=False, warn_empty=False)
    else:
        model.fit(minutes=minutes, checkpoint=False, warn_empty=False)
    wall = time.perf_counter() - t0
    m = model.compute_metrics()
    return {"mode": mode, "seed": seed, "steps": model.steps_trained, "wall_s": wall, "pq": m["all"]["pq"],
            "pq_things": m["things"]["pq"], "pq_stuff": m["stuff"]["pq"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["cost", "quality", "budget"], choices=["cost", "quality", "budget"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the equal-steps runs (128 px export)")
    ap.add_argument("--minutes", type=float, default=4.0, help="budget of each equal-time run")
    ap.add_argument("--label", default="", help="a name for this run in the JSON (e.g. the commit)")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_loss_points.json"))
    args = ap.parse_args(argv)
    from bench_train_speed import make_chips as demo_export
    from bench_train_speed import print_pq_rows
    from user_scenes import make_user_scene

    from geomax import export_training_data

    result: dict = {"benchmark": "loss_points", "label": args.label,
                    "args": {k: v for k, v in vars(args).items() if k != "out"},
                    "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(result, indent=2))  # noqa: E731
    if "cost" in args.parts:
        result["cost"] = loss_cost(args.sizes)
        save()
    with tempfile.TemporaryDirectory(prefix="bench_loss_points_") as tmp:
        tmp = Path(tmp)
        if "quality" in args.parts:
            chips = demo_export(tmp / "e128", 128, 120)
            rows = []
            for seed in (0, 1):
                for mode in MODES:
                    rows.append(_fit(chips, mode, seed, epochs=args.epochs))
                    r = rows[-1]
                    print(f"quality {mode:8s} seed {seed}: {r['steps']} steps in {r['wall_s']:.0f} s, PQ "
                          f"{100 * r['pq']:.1f} (things {100 * r['pq_things']:.1f})", flush=True)
                    result["quality"] = rows
                    save()
        if "budget" in args.parts:
            d = tmp / "user256"
            d.mkdir()
            make_user_scene(d / "scene.tif", d / "scene.gpkg", size=1536, seed=300)
            export_training_data(d / "scene.tif", d / "scene.gpkg", d / "chips", thing_classes=["building"],
                                 tile_size=256, progress=False)
            rows = []
            for mode in MODES:
                rows.append(_fit(d / "chips", mode, 0, minutes=args.minutes))
                r = rows[-1]
                print(f"budget {mode:8s}: {r['steps']} steps in {r['wall_s']:.0f} s, PQ {100 * r['pq']:.1f} "
                      f"(things {100 * r['pq_things']:.1f})", flush=True)
                result["budget"] = rows
                save()

    if "cost" in result:
        print(f"\n{'size':>5s} {'mode':8s} {'points':>7s} {'loss fwd+bwd ms':>16s}")
        for r in result["cost"]:
            print(f"{r['size']:5d} {r['mode']:8s} {r['points']:7d} {r['ms']:16.0f}")
    for part in ("quality", "budget"):
        if part in result:
            print(f"\n{part}:", end="")
            print_pq_rows(result[part], "mode", lambda r: r["mode"])
    save()
    print(f"\nwritten {out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out.name}")
    return result


if __name__ == "__main__":
    main()
