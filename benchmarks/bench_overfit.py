"""How far the learner overfits a handful of chips: PQ on the chips it trained on.

Four 64 px chips of a seeded synthetic scene, ``max_deeplab_tiny``, one batch per
epoch, the training config's schedule and peak learning rate; PQ / PQ_things / PQ_stuff on the same chips after
each block of epochs. Prints a table and writes ``benchmarks/results/bench_overfit.json``.

    python benchmarks/bench_overfit.py --epochs 600 --every 100
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from geomax import MaXDeepLab, export_training_data, prepare_data
from geomax.config import TrainConfig, default_of
from geomax.data.synthetic import SYNTHETIC_CLASSES, make_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--every", type=int, default=100, help="evaluate after every N epochs")
    parser.add_argument("--backbone", default="max_deeplab_tiny")
    parser.add_argument("--lr", type=float, default=default_of(TrainConfig, "lr"),
                        help="peak learning rate (default: the training config's)")
    parser.add_argument("--output-stride", type=int, default=None,
                        help="network output stride (4 or 2; default: the variant's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geomax_overfit_"))
    make_scene(work / "scene.tif", work / "labels.gpkg", size=128, seed=3)
    export_training_data(work / "scene.tif", work / "labels.gpkg", work / "chips", class_table=SYNTHETIC_CLASSES,
                         tile_size=64, progress=False)
    data = prepare_data(work / "chips", batch_size=4, val_split_pct=0.0, transforms=False)
    dl = data.train.new(shuffle=False, drop_last=False)
    torch.manual_seed(0)
    extra = {} if args.output_stride is None else {"output_stride": args.output_stride}
    model = MaXDeepLab(data, backbone=args.backbone, **extra)
    rows, t0 = [], time.time()
    print(f"{len(data.train_ds)} chips of 64 px, {args.backbone}, output stride "
          f"{model.learn.model.output_stride}, lr {args.lr:g}")
    print(f"{'epochs':>7s} {'seconds':>8s} {'loss':>7s} {'PQ':>6s} {'PQ_th':>6s} {'PQ_st':>6s}")
    # the recipe of every block: no checkpoints, no validation split to monitor
    recipe = TrainConfig(epochs=args.every, lr=args.lr, checkpoint=False, monitor="train_loss")
    for done in range(args.every, args.epochs + 1, args.every):
        with model.learn.no_bar(), model.learn.no_logging():
            model.fit(config=recipe)
        m = model.compute_metrics(dl=dl)
        row = {"epochs": done, "seconds": time.time() - t0, "loss": float(model.learn.recorder.losses[-1]),
               "pq": m["all"]["pq"], "pq_things": m["things"]["pq"], "pq_stuff": m["stuff"]["pq"],
               "per_class": {k: v["pq"] for k, v in m["per_class"].items()}}
        rows.append(row)
        print(f"{done:7d} {row['seconds']:8.0f} {row['loss']:7.3f} {100 * row['pq']:6.1f} "
              f"{100 * row['pq_things']:6.1f} {100 * row['pq_stuff']:6.1f}", flush=True)
    out = Path(__file__).parent / "results" / f"bench_overfit_os{model.learn.model.output_stride}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2, default=float))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
