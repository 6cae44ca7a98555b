"""Panoptic quality of MaX-DeepLab against the classic GIS recipe, for the same wall-clock training budget.

1. Make a synthetic training scene and a separate held-out test scene (other seed).
2. Export 256 px chips of the training scene; ``prepare_data``.
3. Train the default CPU MaX-DeepLab variant for ``--minutes`` of wall clock.
4. Train the baseline for the same budget on the same chips: a semantic-segmentation
   U-Net of similar size (cross-entropy on the class map), things split into
   instances by connected components — what most GIS workflows do today.
5. Both go through the same ``predict_raster`` (tiling, cross-tile merging, COG) on the
   test scene and the same evaluator (``geomax.evaluate.evaluate_raster``) against its
   labels: PQ, PQ_things, PQ_stuff and per class (buildings touch in rows).
   MaX-DeepLab is also reported with deeplab2's one instance per slot
   (``split_disconnected_things=False``, same weights).

Prints a table and writes ``benchmarks/results/bench_quality.json``.

    python benchmarks/bench_quality.py --minutes 15          # the reported figures
    python benchmarks/bench_quality.py --minutes 1 --quick   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from geomax import MaXDeepLab, export_training_data
from geomax.common import GT_SEMANTIC, GT_VALID
from geomax.data.normalize import normalize
from geomax.data.synthetic import SYNTHETIC_CLASSES, make_scene
from geomax.evaluate import evaluate_raster
from geomax.inference.predictor import TilePredictor
from geomax.models.callbacks import TimeBudget
from geomax.panoptic import SEGMENT_COLUMNS, PanopticResult
from geomax.workflows.train import prepare, resolve_train_config

RESULTS = Path(__file__).parent / "results"


# --------------------------------------------------------------------------- baseline
def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Plain U-Net for semantic segmentation (the baseline's network)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 24, depth: int = 4):
        super().__init__()
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels, chans[0])] +
                                  [_double_conv(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_double_conv(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def semantic_loss(pred, target):
    """Cross-entropy on the class map; void (index 0) and no-data pixels ignored."""
    sem = target[GT_SEMANTIC].clone()
    sem[~target[GT_VALID]] = 0
    return F.cross_entropy(pred, sem - 1, ignore_index=-1)  # classes 1..C -> 0..C-1; void -> -1


class ConnectedComponentsPredictor(TilePredictor):
    """Per-tile predictor (a geomax TilePredictor) for the baseline: argmax + connected components."""

    def __init__(self, net: nn.Module, data, min_thing_area: int = 16):
        from scipy import ndimage

        self.net, self.ndimage = net.eval(), ndimage
        self.class_table, self.band_stats = data.class_table, data.band_stats
        self.band_names, self.n_bands = list(data.band_names), data.n_bands
        self.tile_multiple, self.chip_size, self.min_thing_area = 16, data.chip_size, min_thing_area

    @torch.no_grad()
    def predict_tiles(self, tiles, valid, windows=None, **options):
        if options:
            raise ValueError(f"ConnectedComponentsPredictor takes no options, got {sorted(options)}.")
        x = torch.from_numpy(normalize(np.asarray(tiles), self.band_stats, valid))
        prob = torch.softmax(self.net(x), dim=1)
        conf, idx = prob.max(dim=1)
        lut = self.class_table.value_lut()
        thing = self.class_table.is_thing_index()
        results = []
        for b in range(len(tiles)):
            class_index = idx[b].numpy() + 1
            if valid is not None:
                class_index[~np.asarray(valid[b], bool)] = 0
            instance = np.zeros(class_index.shape, np.int32)
            segment = np.zeros(class_index.shape, np.int32)
            rows, next_id, next_inst = [], 1, 1
            for ci in range(1, self.class_table.n_classes + 1):
                mask = class_index == ci
                if not mask.any():
                    continue
                info = self.class_table.info(ci)
                if not thing[ci]:
                    segment[mask] = next_id
                    rows.append((next_id, info.value, info.name, False, float(conf[b][torch.from_numpy(mask)].mean()),
                                 int(mask.sum())))
                    next_id += 1
                    continue
                labels, n = self.ndimage.label(mask)
                areas = np.bincount(labels.ravel(), minlength=n + 1)
                for k in range(1, n + 1):
                    if areas[k] < self.min_thing_area:
                        class_index[labels == k] = 0
                        continue
                    m = labels == k
                    segment[m], instance[m] = next_id, next_inst
                    rows.append((next_id, info.value, info.name, True, float(conf[b][torch.from_numpy(m)].mean()),
                                 int(areas[k])))
                    next_id, next_inst = next_id + 1, next_inst + 1
            class_map = lut[class_index].astype(np.int32)
            confidence = np.where(class_map > 0, conf[b].numpy(), 0).astype(np.float32)
            results.append(PanopticResult(class_map, instance, segment, confidence,
                                          pd.DataFrame(rows, columns=SEGMENT_COLUMNS)))
        return results


def train_baseline(data, seconds: float, lr: float):
    import fastai.callback.schedule  # noqa: F401
    from fastai.learner import Learner

    net = UNet(data.n_bands, data.class_table.n_classes, width=21)  # about 3.4 M parameters, like max_deeplab_cpu
    learn = Learner(data, net, loss_func=semantic_loss)
    budget = TimeBudget(seconds, verbose=True)
    learn.fit_one_cycle(10_000, lr, cbs=[budget])
    return net, budget


# --------------------------------------------------------------------------- run
def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarise(metrics: dict) -> dict:
    per = metrics.get("per_class", {})
    return {"PQ": metrics["all"]["pq"], "PQ_things": metrics["things"]["pq"], "PQ_stuff": metrics["stuff"]["pq"],
            "SQ": metrics["all"]["sq"], "RQ": metrics["all"]["rq"],
            "PQ_building": per.get("building", {}).get("pq", float("nan")),
            "per_class": {k: v.get("pq") for k, v in per.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each model (wall clock)")
    parser.add_argument("--train-size", type=int, default=1536, help="training scene side, px")
    parser.add_argument("--test-size", type=int, default=1024, help="held-out scene side, px")
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the TrainConfig recipe's")
    parser.add_argument("--backbone", default="max_deeplab_cpu")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak one-cycle lr of MaX-DeepLab (default: the TrainConfig recipe's)")
    parser.add_argument("--baseline-lr", type=float, default=3e-3)
    parser.add_argument("--output-stride", type=int, default=None,
                        help="network output stride (default: the variant's own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra MaXDeepLab keyword (network / loss / post-processing), e.g. mask_id_weight=1.0")
    parser.add_argument("--no-baseline", action="store_true", help="train and report MaX-DeepLab only (ablations)")
    parser.add_argument("--save-model", default=None, help="also save the trained MaX-DeepLab here (a model folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small scenes, for a smoke run")
    parser.add_argument("--workdir", default=None, help="keep the scenes and predictions here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.train_size, args.test_size, args.chip_size = 512, 512, 128

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="geomax_bench_quality_"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    make_scene(work / "train.tif", work / "train.gpkg", size=args.train_size, seed=11)
    make_scene(work / "test.tif", work / "test.gpkg", size=args.test_size, seed=12345)
    export_training_data(work / "train.tif", work / "train.gpkg", work / "chips", class_table=SYNTHETIC_CLASSES,
                         tile_size=args.chip_size, progress=False)
    recipe = resolve_train_config(minutes=args.minutes, lr=args.lr, batch_size=args.batch_size)
    data = prepare(work / "chips", recipe)  # the recipe's batch size, split and seed
    seconds = args.minutes * 60
    tile = args.chip_size  # MaXDeepLab.default_tile_size: the slots were sized to a chip's segments
    overlap = tile // 4
    rows, report = [], {"settings": vars(args), "n_train_chips": len(data.train_ds)}

    torch.manual_seed(0)
    net_kwargs = {} if args.output_stride is None else {"output_stride": args.output_stride}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            net_kwargs[key] = json.loads(value)  # numbers, true / false, lists
        except json.JSONDecodeError:
            net_kwargs[key] = value  # plain strings, e.g. mask_id_balance=pixel
    model = MaXDeepLab(data, backbone=args.backbone, **net_kwargs)
    t0 = time.time()
    model.fit(config=recipe)
    budget = model.last_budget
    train_s = time.time() - t0
    t0 = time.time()
    model.predict_raster(work / "test.tif", work / "maxdeeplab.tif", tile_size=tile, overlap=overlap, progress=False)
    pred_s = time.time() - t0
    mx = summarise(evaluate_raster(work / "maxdeeplab.tif", work / "test.gpkg", class_table=SYNTHETIC_CLASSES,
                                   progress=False))
    report["maxdeeplab"] = {**mx, "params": n_params(model.model), "train_s": train_s, "epochs": budget.epochs_done,
                            "batches": len(budget.batch_losses), "predict_s": pred_s,
                            "network": dict(model.model.config), "loss": model.state.loss.to_dict(),
                            "train": model.train_config.to_dict()}
    rows.append(("MaX-DeepLab " + args.backbone, report["maxdeeplab"]))
    # the same weights with deeplab2's one instance per slot (split_disconnected_things off)
    model.predict_raster(work / "test.tif", work / "maxdeeplab_per_slot.tif", tile_size=tile, overlap=overlap,
                         progress=False, split_disconnected_things=False)
    per_slot = summarise(evaluate_raster(work / "maxdeeplab_per_slot.tif", work / "test.gpkg",
                                         class_table=SYNTHETIC_CLASSES, progress=False))
    report["maxdeeplab_per_slot"] = {**per_slot, "params": report["maxdeeplab"]["params"],
                                     "batches": report["maxdeeplab"]["batches"]}
    rows.append(("  same weights, 1 instance per slot", report["maxdeeplab_per_slot"]))
    if args.save_model:
        model.save(args.save_model)
    if not args.no_baseline:
        train_and_report_baseline(data, seconds, args, work, tile, overlap, report, rows)
    print_and_write(args, report, rows, work)


def train_and_report_baseline(data, seconds, args, work, tile, overlap, report, rows) -> None:
    """Train the U-Net + connected-components baseline for the same budget; add its row."""
    torch.manual_seed(0)
    t0 = time.time()
    net, budget = train_baseline(data, seconds, args.baseline_lr)
    train_s = time.time() - t0
    predictor = ConnectedComponentsPredictor(net, data)
    from geomax.inference.predict_raster import predict_raster

    t0 = time.time()
    predict_raster(predictor, work / "test.tif", work / "baseline.tif", tile_size=tile, overlap=overlap, progress=False)
    pred_s = time.time() - t0
    base = summarise(evaluate_raster(work / "baseline.tif", work / "test.gpkg", class_table=SYNTHETIC_CLASSES,
                                     progress=False))
    report["baseline"] = {**base, "params": n_params(net), "train_s": train_s, "epochs": budget.epochs_done,
                          "batches": len(budget.batch_losses), "predict_s": pred_s}
    rows.append(("U-Net + connected components", report["baseline"]))


def print_and_write(args, report, rows, work) -> None:
    """Print the table and write the JSON (``bench_quality.json``; ablations get a suffix)."""
    print(f"\nheld-out scene {args.test_size}x{args.test_size} px, training budget {args.minutes:g} min each, "
          f"{report['n_train_chips']} training chips of {args.chip_size} px")
    head = f"{'model':34s} {'params':>8s} {'batches':>8s} {'PQ':>6s} {'PQ_th':>6s} {'PQ_st':>6s} {'PQ_bldg':>8s}"
    print(head)
    print("-" * len(head))
    for name, r in rows:
        print(f"{name:34s} {r['params'] / 1e6:7.2f}M {r['batches']:8d} {100 * r['PQ']:6.1f} {100 * r['PQ_things']:6.1f} "
              f"{100 * r['PQ_stuff']:6.1f} {100 * r['PQ_building']:8.1f}")
    print("\nper-class PQ:")
    classes = list(report["maxdeeplab"]["per_class"])
    print(f"{'class':14s} {'MaX-DeepLab':>12s} {'per slot':>10s} {'baseline':>10s}")
    for c in classes:
        a, b = report["maxdeeplab"]["per_class"].get(c), report.get("baseline", {}).get("per_class", {}).get(c)
        ps = report.get("maxdeeplab_per_slot", {}).get("per_class", {}).get(c)
        fmt = lambda v: "   -" if v is None or v != v else f"{100 * v:.1f}"
        print(f"{c:14s} {fmt(a):>12s} {fmt(ps):>10s} {fmt(b):>10s}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("bench_quality.json" if "baseline" in report and not args.quick
                     else f"bench_quality_{'quick' if args.quick else 'ablation'}.json")
    out.write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwrote {out} (scenes and predictions in {work})")


if __name__ == "__main__":
    main()
