"""Cost of the panoptic post-processor against the network forward, per tile.

For each case (variant, tile size), in one run:

* the network forward of one tile (random weights, eval mode, no gradient);
* the post-processor (:class:`geomax.models.postprocess.PanopticPostProcessor`) on
  logits built from the synthetic scene's truth for the same tiles: one slot per
  true segment (as many as the variant has slots; the rest confidently void),
  mask logits at the network's output stride (the segment's share of each cell,
  scaled, plus noise), confident class logits. As many slots survive as a good
  model would keep and the objects lie where real ones do, which is what the
  post-processor's work depends on (random weights keep no slot at all);
* the same with ``split_disconnected_things=False`` (one instance per slot).

Prints a table and writes ``benchmarks/results/bench_postprocess.json``.

    python benchmarks/bench_postprocess.py
    python benchmarks/bench_postprocess.py --cases max_deeplab_cpu:128 --tiles 4   # quick
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_predict_raster import oracle_for, scene  # noqa: E402  (same folder)


def truth_tiles(folder: Path, size: int, tile: int, n_tiles: int):
    """(tiles, valid, truths): up to ``n_tiles`` tiles of ``tile`` px with their true panoptic results."""
    import rasterio
    from rasterio.windows import Window

    info = scene(folder, size)
    oracle = oracle_for(info)
    windows = [Window(c, r, tile, tile) for r in range(0, size - tile + 1, tile)
               for c in range(0, size - tile + 1, tile)][:n_tiles]
    with rasterio.open(info.raster) as src:
        tiles = np.stack([src.read(window=w) for w in windows])
    valid = np.ones((len(windows), tile, tile), bool)
    return tiles, valid, oracle.predict_tiles(tiles, valid, windows=windows), info.class_table


def logits_from_truth(result, class_table, num_slots: int, stride: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits (N, H/s, W/s) and class logits (N, C + 1) that say what ``result`` says."""
    seg = torch.from_numpy(result.segment_map.astype(np.int64))
    rows = result.segments.head(num_slots)
    h, w = seg.shape[0] // stride, seg.shape[1] // stride
    masks = torch.full((num_slots, h, w), -4.0)
    classes = torch.full((num_slots, class_table.n_classes + 1), -4.0)
    classes[:, 0] = 6.0  # unused slots: void
    index_of_value = {v: i for i, v in enumerate(class_table.values, start=1)}
    for slot, row in enumerate(rows.itertuples()):
        share = (seg == row.id).float()[None, None]
        if stride > 1:
            share = F.avg_pool2d(share, stride)
        masks[slot] = 12.0 * share[0, 0] - 4.0
        classes[slot] = -4.0
        classes[slot, index_of_value[row.class_value]] = 6.0
    masks += torch.from_numpy(rng.normal(0, 0.5, masks.shape).astype(np.float32))
    return masks, classes


def run_case(variant: str, tile: int, tiles, valid, truths, class_table, repeats: int) -> dict:
    from geomax.common import PRED_MASK_LOGITS
    from geomax.models.maxdeeplab import build_maxdeeplab
    from geomax.models.postprocess import PanopticPostProcessor

    net = build_maxdeeplab(variant, in_channels=tiles.shape[1], num_classes=class_table.n_classes).eval()
    x = torch.from_numpy(tiles.astype(np.float32) / 255.0)
    with torch.no_grad():
        out = net(x[:1])  # warm-up, and the output shapes
        t0 = time.perf_counter()
        for k in range(len(x)):
            net(x[k:k + 1])
        forward_s = (time.perf_counter() - t0) / len(x)
    stride = tile // out[PRED_MASK_LOGITS].shape[-1]
    num_slots = out[PRED_MASK_LOGITS].shape[1]
    rng = np.random.default_rng(0)
    inputs = [logits_from_truth(r, class_table, num_slots, stride, rng) for r in truths]
    row = {"variant": variant, "tile": tile, "slots": num_slots, "output_stride": stride, "tiles": len(tiles),
           "segments_per_tile": float(np.mean([min(len(r.segments), num_slots) for r in truths])),
           "forward_s_per_tile": forward_s}
    for split in (True, False):
        pp = PanopticPostProcessor(class_table, split_disconnected_things=split)
        pp.process_one(*inputs[0], (tile, tile), valid[0])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for (masks, classes), v in zip(inputs, valid):
                pp.process_one(masks, classes, (tile, tile), v)
            best = min(best, (time.perf_counter() - t0) / len(inputs))
        key = "split" if split else "per_slot"
        row[f"postprocess_{key}_s_per_tile"] = best
        row[f"postprocess_{key}_vs_forward"] = best / forward_s
    return row


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["max_deeplab_cpu:128", "max_deeplab_cpu:512", "max_deeplab_s:512"],
                    help="variant:tile_size pairs")
    ap.add_argument("--tiles", type=int, default=4, help="tiles per case")
    ap.add_argument("--repeats", type=int, default=3, help="post-processing repeats (best kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_postprocess.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_postprocess_") as tmp:
        for case in args.cases:
            variant, _, size = case.partition(":")
            tile = int(size)
            tiles, valid, truths, table = truth_tiles(Path(tmp), max(1024, 2 * tile), tile, args.tiles)
            rows.append(run_case(variant, tile, tiles, valid, truths, table, args.repeats))
            r = rows[-1]
            print(f"{variant}:{tile} done ({r['forward_s_per_tile']:.2f} s forward per tile)", flush=True)

    head = (f"{'variant':16s} {'tile':>5s} {'slots':>5s} {'segs':>5s} {'forward s':>10s} {'post s':>8s} "
            f"{'post/fwd':>9s} {'1/slot s':>9s} {'1/slot/fwd':>10s}")
    print("\nper tile (post: split_disconnected_things on; 1/slot: off)")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['variant']:16s} {r['tile']:5d} {r['slots']:5d} {r['segments_per_tile']:5.0f} "
              f"{r['forward_s_per_tile']:10.3f} {r['postprocess_split_s_per_tile']:8.3f} "
              f"{100 * r['postprocess_split_vs_forward']:8.1f}% {r['postprocess_per_slot_s_per_tile']:9.3f} "
              f"{100 * r['postprocess_per_slot_vs_forward']:9.1f}%")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "postprocess", "args": vars(args), "cases": rows}, indent=2))
    print(f"\nwritten {out}")
    return rows


if __name__ == "__main__":
    main()
