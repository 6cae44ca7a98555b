"""Where thing PQ is lost: merged, split or missed objects, per thing class.

Reads a ``bench_quality.py --workdir DIR`` folder (held-out scene ``test.tif``, its
labels ``test.gpkg`` and the predictions ``maxdeeplab.tif`` / ``baseline.tif``) and, for
each thing class and prediction, counts

* predicted instances that cover (>= 20% of) 0, 1, 2 or 3+ true objects: 2+ means
  neighbouring objects merged into one instance;
* true objects by their best IoU with a predicted instance of the class: none (missed),
  below 0.5 (found but not matched: merged, split or misplaced), 0.5 and above (matched).

Prints a table and writes ``benchmarks/results/probe_merges.json``.

    python benchmarks/bench_quality.py --minutes 15 --workdir /tmp/bq
    python benchmarks/probe_merges.py /tmp/bq
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def probe(pred_class: np.ndarray, pred_inst: np.ndarray, gt_class: np.ndarray, gt_inst: np.ndarray,
          value: int) -> dict:
    """Counts for one thing class Value (see the module docstring)."""
    pm = (pred_class == value) & (pred_inst > 0)
    gm = (gt_class == value) & (gt_inst > 0)
    gt_ids, gt_area = np.unique(gt_inst[gm], return_counts=True)
    gt_area_of = dict(zip(gt_ids.tolist(), gt_area.tolist()))
    pred_ids, pred_area = np.unique(pred_inst[pm], return_counts=True)
    pred_area_of = dict(zip(pred_ids.tolist(), pred_area.tolist()))
    # overlaps (pred id, gt id) -> pixels
    both = pm & gm
    pairs, inter = np.unique(np.stack([pred_inst[both], gt_inst[both]]), axis=1, return_counts=True)
    cover = {p: 0 for p in pred_area_of}
    best_iou = {g: 0.0 for g in gt_area_of}
    for (p, g), n in zip(pairs.T.tolist(), inter.tolist()):
        if n >= 0.2 * gt_area_of[g]:
            cover[p] += 1
        best_iou[g] = max(best_iou[g], n / (gt_area_of[g] + pred_area_of[p] - n))
    c = np.array(list(cover.values()), dtype=int)
    b = np.array(list(best_iou.values()), dtype=float)
    return {"predicted": int(c.size), "covering_0": int((c == 0).sum()), "covering_1": int((c == 1).sum()),
            "covering_2": int((c == 2).sum()), "covering_3+": int((c >= 3).sum()),
            "true": int(b.size), "missed": int((b == 0).sum()), "found_iou_below_0.5": int(((b > 0) & (b < 0.5)).sum()),
            "matched": int((b >= 0.5).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="a bench_quality.py --workdir folder")
    parser.add_argument("--predictions", nargs="+", default=["maxdeeplab", "baseline"],
                        help="prediction rasters in the folder, without .tif")
    args = parser.parse_args()
    import geopandas as gpd
    import rasterio

    from geomax.data.rasterize import rasterize_labels
    from geomax.data.synthetic import SYNTHETIC_CLASSES

    work = Path(args.workdir)
    if not (work / "test.tif").exists() or not (work / "test.gpkg").exists():
        raise SystemExit(f"probe_merges: {work} holds no test.tif / test.gpkg; give a bench_quality.py --workdir folder")
    with rasterio.open(work / "test.tif") as src:
        transform, shape = src.transform, (src.height, src.width)
    gt_class, gt_inst = rasterize_labels(gpd.read_file(work / "test.gpkg"), "class_name", SYNTHETIC_CLASSES,
                                         transform, shape)
    things = [c for c in SYNTHETIC_CLASSES if c.is_thing]
    report = {}
    head = (f"{'prediction':12s} {'class':9s} {'pred':>5s} {'cov0':>5s} {'cov1':>5s} {'cov2':>5s} {'cov3+':>6s} "
            f"{'true':>5s} {'missed':>7s} {'IoU<.5':>7s} {'matched':>8s}")
    print(head)
    print("-" * len(head))
    for name in args.predictions:
        path = work / f"{name}.tif"
        if not path.exists():
            print(f"{name}: no {path.name} in {work}, skipped")
            continue
        with rasterio.open(path) as src:
            pred_class, pred_inst = src.read(1).astype(np.int64), src.read(2).astype(np.int64)
        report[name] = {}
        for info in things:
            r = probe(pred_class, pred_inst, gt_class, gt_inst, info.value)
            report[name][info.name] = r
            print(f"{name:12s} {info.name:9s} {r['predicted']:5d} {r['covering_0']:5d} {r['covering_1']:5d} "
                  f"{r['covering_2']:5d} {r['covering_3+']:6d} {r['true']:5d} {r['missed']:7d} "
                  f"{r['found_iou_below_0.5']:7d} {r['matched']:8d}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "probe_merges.json"
    out.write_text(json.dumps({"workdir": str(work), **report}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
